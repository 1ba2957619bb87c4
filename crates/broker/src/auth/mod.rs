//! MQTT 5 enhanced authentication [MQTT-4.12]: the AUTH exchange with SCRAM-SHA-256 against the
//! broker's users, at CONNECT and for re-authentication on a live connection. The SCRAM steps
//! themselves live in `cauldron_proto::scram`; this module maps them onto packets and reason codes.

pub use cauldron_auth::{acl, password};

use cauldron_proto::scram::{self, ScramError, ServerExchange};
use cauldron_proto::{Auth, Bytes, Packet, Properties, ReasonCode};

use crate::config::Config;

/// Properties of an AUTH or CONNACK that carries SCRAM data.
pub fn properties(data: Vec<u8>) -> Properties {
    Properties {
        authentication_method: Some(scram::METHOD.into()),
        authentication_data: Some(Bytes::from(data)),
        ..Properties::default()
    }
}

pub fn packet(reason: ReasonCode, data: Vec<u8>) -> Packet {
    Packet::Auth(Auth { reason, properties: properties(data) })
}

fn failure(e: &ScramError) -> ReasonCode {
    match e {
        ScramError::UnknownUser | ScramError::InvalidProof => ReasonCode::BadUserNameOrPassword,
        _ => ReasonCode::NotAuthorized,
    }
}

/// First step, from the client's Authentication Method and Data: the exchange state and the
/// AUTH (continue) that answers it.
pub fn begin(
    config: &Config,
    method: &str,
    data: Option<&Bytes>,
) -> Result<(ServerExchange, Packet), ReasonCode> {
    if method != scram::METHOD {
        return Err(ReasonCode::BadAuthenticationMethod);
    }
    let data = data.map(|d| &d[..]).unwrap_or_default();
    let (exchange, server_first) =
        ServerExchange::start(data, |user| config.scram_users.get(user).cloned()).map_err(|e| failure(&e))?;
    Ok((exchange, packet(ReasonCode::ContinueAuthentication, server_first)))
}

/// Second step: the client's AUTH (continue) with its proof. Returns the user name and the
/// server-final data for the CONNACK or AUTH (success) that ends the exchange.
pub fn complete(exchange: ServerExchange, reply: &Auth) -> Result<(String, Vec<u8>), ReasonCode> {
    if reply.reason != ReasonCode::ContinueAuthentication
        || reply.properties.authentication_method.as_deref() != Some(scram::METHOD)
    {
        // The method may not change within an exchange [MQTT-4.12.0-5].
        return Err(ReasonCode::ProtocolError);
    }
    let data = reply.properties.authentication_data.as_ref().map(|d| &d[..]).unwrap_or_default();
    exchange.finish(data).map_err(|e| failure(&e))
}

/// Username and password against the password file, or anonymous access. A username with no
/// password file to check it against counts as anonymous, as in Mosquitto.
pub async fn check_credentials(
    config: &Config,
    username: Option<&str>,
    password: Option<&[u8]>,
) -> Result<(), ReasonCode> {
    check_with(config.allow_anonymous, &config.password_file, username, password).await
}

/// The same check with a given anonymous rule and password file (a listener's own).
pub async fn check_with(
    allow_anonymous: bool,
    passwords: &password::Passwords,
    username: Option<&str>,
    password: Option<&[u8]>,
) -> Result<(), ReasonCode> {
    match (username, passwords.current()) {
        (Some(user), Some(file)) => {
            match file.check_off_runtime(user.into(), password.unwrap_or_default().into()).await {
                true => Ok(()),
                false => Err(ReasonCode::BadUserNameOrPassword),
            }
        }
        _ if allow_anonymous => Ok(()),
        _ => Err(ReasonCode::NotAuthorized),
    }
}
