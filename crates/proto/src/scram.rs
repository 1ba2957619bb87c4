//! SCRAM-SHA-256 (RFC 5802 with RFC 7677), the enhanced authentication method cauldron offers to
//! MQTT 5 clients, both sides, without I/O: each step takes the peer's message and returns the
//! next one. The MQTT exchange carries these messages as Authentication Data.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// The Authentication Method name in CONNECT and AUTH.
pub const METHOD: &str = "SCRAM-SHA-256";
/// Iterations used for new credentials (RFC 7677's minimum).
pub const DEFAULT_ITERATIONS: u32 = 4096;

type Key = [u8; 32];

/// What the server keeps for a user: never the password itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    pub salt: Vec<u8>,
    pub iterations: u32,
    pub stored_key: Key,
    pub server_key: Key,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScramError {
    #[error("malformed SCRAM message: {0}")]
    Malformed(&'static str),
    #[error("channel binding is not supported")]
    ChannelBinding,
    #[error("unknown user")]
    UnknownUser,
    #[error("nonce does not continue the exchange")]
    NonceMismatch,
    #[error("wrong password")]
    InvalidProof,
    #[error("the server's signature does not verify")]
    InvalidServerSignature,
    #[error("no randomness available")]
    Random,
}

fn hmac(key: &[u8], message: &[u8]) -> Key {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(message);
    mac.finalize().into_bytes().into()
}

fn sha256(data: &[u8]) -> Key {
    Sha256::digest(data).into()
}

fn xor(a: &Key, b: &Key) -> Key {
    std::array::from_fn(|i| a[i] ^ b[i])
}

fn nonce() -> Result<String, ScramError> {
    let mut bytes = [0u8; 18];
    getrandom::fill(&mut bytes).map_err(|_| ScramError::Random)?;
    Ok(BASE64.encode(bytes))
}

/// Keys derived from the password: (ClientKey, ServerKey).
fn keys(password: &[u8], salt: &[u8], iterations: u32) -> (Key, Key) {
    let mut salted = [0u8; 32];
    pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, iterations, &mut salted);
    (hmac(&salted, b"Client Key"), hmac(&salted, b"Server Key"))
}

impl Credential {
    pub fn derive(password: &[u8], salt: &[u8], iterations: u32) -> Credential {
        let (client_key, server_key) = keys(password, salt, iterations);
        Credential { salt: salt.to_vec(), iterations, stored_key: sha256(&client_key), server_key }
    }

    /// A credential with a fresh random salt.
    pub fn generate(password: &[u8]) -> Result<Credential, ScramError> {
        let mut salt = [0u8; 16];
        getrandom::fill(&mut salt).map_err(|_| ScramError::Random)?;
        Ok(Credential::derive(password, &salt, DEFAULT_ITERATIONS))
    }
}

/// `key=value` attributes of a SCRAM message, in order.
fn attributes(message: &str) -> impl Iterator<Item = (char, &str)> {
    message.split(',').filter_map(|part| {
        let mut chars = part.chars();
        let key = chars.next()?;
        part.get(1..)?.strip_prefix('=').map(|value| (key, value))
    })
}

fn attribute(message: &str, key: char) -> Option<&str> {
    attributes(message).find(|(k, _)| *k == key).map(|(_, v)| v)
}

fn text(bytes: &[u8]) -> Result<&str, ScramError> {
    std::str::from_utf8(bytes).map_err(|_| ScramError::Malformed("not UTF-8"))
}

/// `=2C` and `=3D` stand for ',' and '=' in a SCRAM user name.
fn decode_name(name: &str) -> String {
    name.replace("=2C", ",").replace("=3D", "=")
}

fn encode_name(name: &str) -> String {
    name.replace('=', "=3D").replace(',', "=2C")
}

/// Server state after its first message, waiting for the client's final message.
#[derive(Debug)]
pub struct ServerExchange {
    username: String,
    gs2_header: String,
    auth_prefix: String,
    nonce: String,
    credential: Credential,
}

impl ServerExchange {
    /// Takes the client-first message; `lookup` finds the user's credential. Returns the
    /// exchange and the server-first message.
    pub fn start(
        client_first: &[u8],
        lookup: impl FnOnce(&str) -> Option<Credential>,
    ) -> Result<(ServerExchange, Vec<u8>), ScramError> {
        let message = text(client_first)?;
        // gs2 header: "n,," (no channel binding) or "y,," (client could, thinks we can't).
        let (gs2_header, bare) = match message.get(..3) {
            Some("n,," | "y,,") => (&message[..3], &message[3..]),
            Some(h) if h.starts_with('p') => return Err(ScramError::ChannelBinding),
            _ => return Err(ScramError::Malformed("gs2 header")),
        };
        let username = decode_name(attribute(bare, 'n').ok_or(ScramError::Malformed("no user name"))?);
        let client_nonce = attribute(bare, 'r').ok_or(ScramError::Malformed("no nonce"))?;
        let credential = lookup(&username).ok_or(ScramError::UnknownUser)?;
        let nonce = format!("{client_nonce}{}", nonce()?);
        let server_first =
            format!("r={nonce},s={},i={}", BASE64.encode(&credential.salt), credential.iterations);
        let exchange = ServerExchange {
            username,
            gs2_header: gs2_header.to_string(),
            auth_prefix: format!("{bare},{server_first}"),
            nonce,
            credential,
        };
        Ok((exchange, server_first.into_bytes()))
    }

    pub fn username(&self) -> &str {
        &self.username
    }

    /// Checks the client-final message's proof. Returns the user name and the server-final
    /// message that proves the server knew the credential too.
    pub fn finish(self, client_final: &[u8]) -> Result<(String, Vec<u8>), ScramError> {
        let message = text(client_final)?;
        let (without_proof, proof) = message.rsplit_once(",p=").ok_or(ScramError::Malformed("no proof"))?;
        if attribute(without_proof, 'c') != Some(&BASE64.encode(&self.gs2_header)) {
            return Err(ScramError::ChannelBinding);
        }
        if attribute(without_proof, 'r') != Some(&self.nonce) {
            return Err(ScramError::NonceMismatch);
        }
        let proof: Key = BASE64
            .decode(proof)
            .ok()
            .and_then(|p| p.try_into().ok())
            .ok_or(ScramError::Malformed("proof"))?;
        let auth_message = format!("{},{without_proof}", self.auth_prefix);
        let client_signature = hmac(&self.credential.stored_key, auth_message.as_bytes());
        let client_key = xor(&proof, &client_signature);
        // Compare digests in constant time: no early exit on the first differing byte.
        let difference = sha256(&client_key)
            .iter()
            .zip(&self.credential.stored_key)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        if difference != 0 {
            return Err(ScramError::InvalidProof);
        }
        let server_signature = hmac(&self.credential.server_key, auth_message.as_bytes());
        Ok((self.username, format!("v={}", BASE64.encode(server_signature)).into_bytes()))
    }
}

/// Client state between its first message and the server's first message.
#[derive(Debug)]
pub struct ClientExchange {
    password: Vec<u8>,
    client_first_bare: String,
    client_nonce: String,
}

/// Client state waiting for the server-final message.
#[derive(Debug)]
pub struct ClientVerifier {
    server_signature: Key,
}

impl ClientExchange {
    /// Returns the exchange and the client-first message.
    pub fn start(username: &str, password: &[u8]) -> Result<(ClientExchange, Vec<u8>), ScramError> {
        let client_nonce = nonce()?;
        let client_first_bare = format!("n={},r={client_nonce}", encode_name(username));
        let message = format!("n,,{client_first_bare}").into_bytes();
        Ok((ClientExchange { password: password.to_vec(), client_first_bare, client_nonce }, message))
    }

    /// Takes the server-first message and returns the client-final message.
    pub fn finish(self, server_first: &[u8]) -> Result<(ClientVerifier, Vec<u8>), ScramError> {
        let server_first = text(server_first)?;
        let nonce = attribute(server_first, 'r').ok_or(ScramError::Malformed("no nonce"))?;
        if !nonce.starts_with(&self.client_nonce) {
            return Err(ScramError::NonceMismatch);
        }
        let salt = attribute(server_first, 's')
            .and_then(|s| BASE64.decode(s).ok())
            .ok_or(ScramError::Malformed("salt"))?;
        let iterations = attribute(server_first, 'i')
            .and_then(|i| i.parse().ok())
            .ok_or(ScramError::Malformed("iterations"))?;
        let (client_key, server_key) = keys(&self.password, &salt, iterations);
        let without_proof = format!("c={},r={nonce}", BASE64.encode("n,,"));
        let auth_message = format!("{},{server_first},{without_proof}", self.client_first_bare);
        let client_signature = hmac(&sha256(&client_key), auth_message.as_bytes());
        let proof = xor(&client_key, &client_signature);
        let verifier = ClientVerifier { server_signature: hmac(&server_key, auth_message.as_bytes()) };
        Ok((verifier, format!("{without_proof},p={}", BASE64.encode(proof)).into_bytes()))
    }
}

impl ClientVerifier {
    /// Checks the server-final message.
    pub fn verify(&self, server_final: &[u8]) -> Result<(), ScramError> {
        let signature = attribute(text(server_final)?, 'v').and_then(|v| BASE64.decode(v).ok());
        match signature {
            Some(s) if s == self.server_signature => Ok(()),
            _ => Err(ScramError::InvalidServerSignature),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The SCRAM-SHA-256 example of RFC 7677 section 3, with its fixed nonces.
    #[test]
    fn rfc7677_example_proof_and_signature() {
        let credential =
            Credential::derive(b"pencil", &BASE64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap(), 4096);
        let client_first = b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO";
        let (mut exchange, _) =
            ServerExchange::start(client_first, |name| (name == "user").then(|| credential.clone())).unwrap();
        // Pin the server nonce to the RFC's so its proof applies.
        exchange.nonce = "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0".into();
        exchange.auth_prefix = "n=user,r=rOprNGfwEbeRWgbNEkqO,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096".into();
        let client_final = b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
        let (user, server_final) = exchange.finish(client_final).unwrap();
        assert_eq!(user, "user");
        assert_eq!(server_final, b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=");
    }

    #[test]
    fn both_sides_agree_and_a_wrong_password_fails() {
        let credential = Credential::generate(b"secret").unwrap();
        let lookup = |name: &str| (name == "a,b=c").then(|| credential.clone());
        let (client, first) = ClientExchange::start("a,b=c", b"secret").unwrap();
        let (server, server_first) = ServerExchange::start(&first, lookup).unwrap();
        assert_eq!(server.username(), "a,b=c");
        let (verifier, client_final) = client.finish(&server_first).unwrap();
        let (_, server_final) = server.finish(&client_final).unwrap();
        verifier.verify(&server_final).unwrap();

        let (client, first) = ClientExchange::start("a,b=c", b"wrong").unwrap();
        let (server, server_first) = ServerExchange::start(&first, lookup).unwrap();
        let (_, client_final) = client.finish(&server_first).unwrap();
        assert_eq!(server.finish(&client_final).unwrap_err(), ScramError::InvalidProof);
        assert_eq!(ServerExchange::start(b"n,,n=nobody,r=x", lookup).unwrap_err(), ScramError::UnknownUser);
        assert_eq!(
            ServerExchange::start(b"p=tls-unique,,n=a,r=x", lookup).unwrap_err(),
            ScramError::ChannelBinding
        );
    }
}
