//! The first exchange of a connection: CONNECT (and MQTT 5 enhanced authentication) in,
//! CONNACK out, the session attached.

use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use cauldron_proto::{
    decode, scram, ByteString, ConnAck, Connect, DecodeError, Packet, Properties, Protocol, QoS, ReasonCode,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tracing::{debug, info};

use crate::auth;
use crate::broker::Broker;
use crate::metrics::{self, Refusal};
use crate::session::{next_connection_id, Session};

use super::{CertIdentity, Connection, Extras, Origin, Resting};

/// Largest packet read before a client is authenticated. The largest CONNECT anyone sends is a
/// few 64 KB fields (id, will, user name, password) and some properties; anything bigger is
/// refused from its header, so an unauthenticated peer cannot make the broker buffer megabytes.
const MAX_UNAUTHENTICATED_PACKET: usize = 256 * 1024;

/// Reads until one whole packet is there, which must be CONNECT [MQTT-3.1.0-1].
pub(super) async fn read_connect<R: AsyncRead + Unpin>(
    broker: &Broker,
    reader: &mut R,
    rbuf: &mut BytesMut,
) -> Result<Box<Connect>, DecodeError> {
    match read_packet(broker, reader, rbuf, Protocol::V3_1_1, MAX_UNAUTHENTICATED_PACKET).await? {
        Packet::Connect(connect) => Ok(connect),
        other => Err(DecodeError::ReservedPacketType(other.packet_type() as u8)),
    }
}

/// Reads one whole packet outside the main loop (handshake steps), at most `limit` bytes (and
/// never more than the broker's maximum packet size).
async fn read_packet<R: AsyncRead + Unpin>(
    broker: &Broker,
    reader: &mut R,
    rbuf: &mut BytesMut,
    protocol: Protocol,
    limit: usize,
) -> Result<Packet, DecodeError> {
    let limit = limit.min(broker.config.max_packet_size);
    loop {
        if let Some(packet) = decode(rbuf, protocol, limit)? {
            return Ok(packet);
        }
        match reader.read_buf(rbuf).await {
            Ok(0) | Err(_) => return Err(DecodeError::Truncated),
            Ok(n) => metrics::add(&broker.metrics.traffic().bytes_received, n as u64),
        }
    }
}

/// The CONNECT-time AUTH exchange (MQTT 5 enhanced authentication). Returns the user name and
/// the server's final data, or the reason code to refuse the connection with.
async fn enhanced_auth<S: AsyncRead + AsyncWrite + Unpin>(
    broker: &Broker,
    connect: &Connect,
    stream: &mut S,
    rbuf: &mut BytesMut,
) -> Result<(String, Vec<u8>), ReasonCode> {
    let method = connect.properties.authentication_method.as_deref().unwrap_or_default();
    let (exchange, challenge) =
        auth::begin(&broker.config, method, connect.properties.authentication_data.as_ref())?;
    let mut buf = BytesMut::new();
    challenge.encode(Protocol::V5, &mut buf).map_err(|_| ReasonCode::UnspecifiedError)?;
    stream.write_all(&buf).await.map_err(|_| ReasonCode::UnspecifiedError)?;
    stream.flush().await.map_err(|_| ReasonCode::UnspecifiedError)?;
    let reply = tokio::time::timeout(
        broker.config.connect_timeout,
        read_packet(broker, stream, rbuf, Protocol::V5, MAX_UNAUTHENTICATED_PACKET),
    )
    .await
    .map_err(|_| ReasonCode::NotAuthorized)?
    .map_err(|e| e.reason_code())?;
    match reply {
        Packet::Auth(auth) => auth::complete(exchange, &auth),
        _ => Err(ReasonCode::ProtocolError),
    }
}

pub(super) async fn write_and_close<W: AsyncWrite + Unpin>(
    writer: &mut W,
    packet: &Packet,
    protocol: Protocol,
) {
    let mut buf = BytesMut::new();
    if packet.encode(protocol, &mut buf).is_ok() {
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            writer.write_all(&buf).await?;
            writer.flush().await
        })
        .await;
    }
    let _ = writer.shutdown().await;
}

/// A client id for a client that sent none [MQTT-3.1.3-6]: the prefix and a random UUID-shaped
/// 36 characters, as Mosquitto assigns them (so the CONNACK is as long as Mosquitto's).
fn assign_client_id(prefix: &str) -> ByteString {
    let random = || std::collections::hash_map::RandomState::new().build_hasher().finish();
    let (a, b) = (random(), random());
    ByteString::from(format!(
        "{prefix}{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xffff,
        b >> 48,
        b & 0xffff_ffff_ffff
    ))
}

/// Counts and logs a refused login, and waits a moment before answering it, which makes guessing
/// passwords slow.
async fn refuse_credentials(broker: &Broker, peer: SocketAddr, client_id: &ByteString, code: ReasonCode) {
    metrics::add(&broker.metrics.auth_failures, 1);
    broker.metrics.refuse(Refusal::Auth);
    info!(%peer, "Client {client_id} refused: {code:?}.");
    tokio::time::sleep(broker.config.auth_failure_delay).await;
}

/// Decides on a CONNECT, answers CONNACK, and on success attaches the session.
pub(super) async fn accept<S: AsyncRead + AsyncWrite + Unpin>(
    broker: &Arc<Broker>,
    connect: Connect,
    peer: SocketAddr,
    origin: Origin,
    stream: &mut S,
    rbuf: &mut BytesMut,
) -> Option<Connection> {
    let Origin { identity, auth, mount_point } = origin;
    let protocol = connect.protocol;
    let config = &broker.config;
    let refuse = |code: ReasonCode| {
        // 3.1.1's 4 is for credentials that are *malformed*; well formed but wrong ones are "not
        // authorized" (5), as Mosquitto answers too. MQTT 5 has 0x86 for exactly this.
        let code = match code {
            ReasonCode::BadUserNameOrPassword if !protocol.is_v5() => ReasonCode::NotAuthorized,
            code => code,
        };
        Packet::ConnAck(ConnAck { session_present: false, code, properties: Properties::default() })
    };
    let mut props = Properties::default();
    let client_id = if connect.client_id.is_empty() {
        // 3.1 requires an id; 3.1.1 only allows an empty one with clean session [MQTT-3.1.3-8].
        let refused = protocol == Protocol::V3_1
            || (protocol == Protocol::V3_1_1 && !connect.clean_start)
            || !config.allow_zero_length_clientid;
        if refused {
            broker.metrics.refuse(Refusal::Protocol);
            write_and_close(stream, &refuse(ReasonCode::ClientIdentifierNotValid), protocol).await;
            return None;
        }
        let id = assign_client_id(&config.auto_id_prefix);
        if protocol.is_v5() {
            props.assigned_client_identifier = Some(id.clone());
        }
        id
    } else {
        // A copy, not a slice: a slice would pin the whole CONNECT read buffer for the life
        // of the session.
        ByteString::from(&*connect.client_id)
    };
    // A will bigger than message_size_limit could never be published: refused, as Mosquitto
    // does (MQTT 5: 0x95; 3.x: "not authorized").
    let limit = config.message_size_limit;
    if connect.will.as_ref().is_some_and(|w| limit > 0 && w.payload.len() > limit) {
        broker.metrics.refuse(Refusal::Protocol);
        write_and_close(stream, &refuse(ReasonCode::PacketTooLarge), protocol).await;
        return None;
    }
    let mut auth_method = None;
    let mut username = connect.username.clone();
    if protocol.is_v5() && connect.properties.authentication_method.is_some() {
        match enhanced_auth(broker, &connect, stream, rbuf).await {
            Ok((user, server_final)) => {
                debug!(%peer, user, "authenticated with {}", scram::METHOD);
                username = Some(user.into());
                auth_method = connect.properties.authentication_method.clone();
                let data = auth::properties(server_final);
                props.authentication_method = data.authentication_method;
                props.authentication_data = data.authentication_data;
            }
            Err(code) => {
                refuse_credentials(broker, peer, &client_id, code).await;
                write_and_close(stream, &refuse(code), protocol).await;
                return None;
            }
        }
    } else if let CertIdentity::Named(name) = identity {
        // The certificate is the credential; without one there is nobody to be.
        let Some(name) = name else {
            refuse_credentials(broker, peer, &client_id, ReasonCode::NotAuthorized).await;
            write_and_close(stream, &refuse(ReasonCode::NotAuthorized), protocol).await;
            return None;
        };
        username = Some(name.into());
    } else if let Err(code) = match &auth {
        Some(own) => {
            auth::check_with(
                own.allow_anonymous,
                &own.passwords,
                connect.username.as_deref(),
                connect.password.as_deref(),
            )
            .await
        }
        None => {
            auth::check_credentials(config, connect.username.as_deref(), connect.password.as_deref()).await
        }
    } {
        refuse_credentials(broker, peer, &client_id, code).await;
        write_and_close(stream, &refuse(code), protocol).await;
        return None;
    }

    // Above max_keepalive (or 0, "never", when a maximum is set): MQTT 5 clients are told the
    // maximum in Server Keep Alive; 3.x clients cannot be, and are refused as Mosquitto does.
    let mut keep_alive = connect.keep_alive;
    let limited = config.max_keepalive > 0;
    if limited && (keep_alive > config.max_keepalive || keep_alive == 0) {
        if !protocol.is_v5() {
            broker.metrics.refuse(Refusal::Protocol);
            info!(%peer, keep_alive, max = config.max_keepalive, "Client refused: keep alive above max_keepalive.");
            write_and_close(stream, &refuse(ReasonCode::ClientIdentifierNotValid), protocol).await;
            return None;
        }
        keep_alive = config.max_keepalive;
        props.server_keep_alive = Some(keep_alive);
    }
    if let Some(redirect) = broker.redirection() {
        // Maintenance redirection: MQTT 5 clients are told where to go [MQTT-4.11].
        let mut connack = ConnAck {
            session_present: false,
            code: redirect.reason_code(),
            properties: Properties::default(),
        };
        connack.properties.server_reference = Some(redirect.reference.into());
        broker.metrics.refuse(Refusal::Redirected);
        write_and_close(stream, &Packet::ConnAck(connack), protocol).await;
        return None;
    }
    let expiry_interval = match protocol {
        Protocol::V5 => connect.properties.session_expiry_interval.unwrap_or(0),
        _ if connect.clean_start => 0,
        // 3.x persistent sessions live until Mosquitto's persistent_client_expiration, if set.
        _ => config
            .persistent_client_expiration
            .map_or(u32::MAX, |d| d.as_secs().min(u64::from(u32::MAX - 1)) as u32),
    };
    let id = next_connection_id();
    if let Some(directory) = broker.directory() {
        // In a cluster the client id may be live on another node: that one closes first.
        if let Err(e) = Arc::clone(directory).claim(client_id.clone(), id, !connect.clean_start).await {
            info!(%peer, "Client {client_id} refused: the cluster's session registry is unavailable: {e}.");
            broker.metrics.refuse(Refusal::Unavailable);
            write_and_close(stream, &refuse(ReasonCode::ServerUnavailable), protocol).await;
            return None;
        }
    }
    broker.settle_predecessor(&client_id).await;
    let (session, session_present) = broker.open_session(&client_id, connect.clean_start);
    let resumes = session.read(Session::resumes);
    let doorbell = Arc::new(crate::session::Doorbell::default());
    session.set_connection(id, Arc::clone(&doorbell));
    let (resend, _) = session.edit(|state| {
        state.set_max_packet_size(connect.properties.maximum_packet_size.unwrap_or(u32::MAX));
        let receive_maximum = connect.properties.receive_maximum.map_or(usize::MAX, usize::from);
        let resend = state.attach(id, protocol, receive_maximum);
        state.encode_qos0(!protocol.is_v5() && mount_point.is_none());
        state.set_expiry_interval(expiry_interval);
        resend
    });
    session.set_online(true);
    session.set_username(username);
    broker.use_listener_authorizer(&session, auth.as_ref().map(|a| Arc::clone(&a.authorizer)));
    if protocol.is_v5() {
        // Advertise only what differs from the defaults of MQTT 5.0 section 3.2.2.3.
        props.topic_alias_maximum = Some(config.topic_alias_maximum).filter(|m| *m > 0);
        props.receive_maximum = Some(config.receive_maximum()).filter(|m| *m < u16::MAX);
        props.maximum_qos = Some(config.max_qos).filter(|q| *q < QoS::ExactlyOnce);
        let unless = |available: bool| (!available).then_some(false);
        props.retain_available = unless(config.retain_available);
        props.wildcard_subscription_available = unless(config.wildcard_subscription_available);
        props.subscription_identifiers_available = unless(config.subscription_identifier_available);
        props.shared_subscription_available = unless(config.shared_subscription_available);
        if connect.properties.request_response_information == Some(true) {
            props.response_information =
                config.response_topic_prefix.as_ref().map(|prefix| format!("{prefix}/{client_id}").into());
        }
        if config.max_packet_size < cauldron_proto::MAX_VARINT as usize {
            props.maximum_packet_size = Some(config.max_packet_size as u32);
        }
    }
    info!(
        "New client connected from {peer} as {client_id} (p{}, c{}, k{keep_alive}{}).",
        // Mosquitto's protocol numbers: p1 is 3.1, p2 is 3.1.1, p5 is 5.0.
        match protocol {
            Protocol::V3_1 => 1,
            Protocol::V3_1_1 => 2,
            Protocol::V5 => 5,
        },
        u8::from(connect.clean_start),
        connect.username.as_ref().map(|u| format!(", u'{u}'")).unwrap_or_default()
    );
    let mut conn = Connection::new(Resting {
        broker: Arc::clone(broker),
        session,
        resumes,
        id,
        doorbell,
        protocol,
        peer,
        will: connect.will.map(Box::new),
        silence_ms: u32::from(keep_alive) * 1500,
        session_expiry_zero: expiry_interval == 0,
        bridge: connect.bridge,
        alias_out_max: connect.properties.topic_alias_maximum.unwrap_or(0),
        // Reason strings only where the operator wants them (Mosquitto sends none) and the
        // client did not refuse them [MQTT-3.1.2-29].
        problem_information: config.reason_strings
            && connect.properties.request_problem_information.unwrap_or(true),
        extras: (auth_method.is_some() || auth.is_some() || mount_point.is_some())
            .then(|| Box::new(Extras { auth_method, auth, mount: mount_point, ..Extras::default() })),
    });
    // CONNACK first, then whatever the resumed session still owes the client.
    // MQTT 3.1 has no session present flag: the byte is reserved there (Mosquitto sends 0).
    let session_present = session_present && protocol != Protocol::V3_1;
    conn.send(&Packet::ConnAck(ConnAck { session_present, code: ReasonCode::Success, properties: props }));
    for packet in &resend {
        conn.send(packet);
    }
    conn.register_will();
    Some(conn)
}
