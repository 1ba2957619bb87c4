//! One task per network connection: read -> decode -> act on the session -> encode -> batched
//! write. It owns the socket and nothing else; shared state lives in `Broker` and the session.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use cauldron_proto::{
    decode, scram, Ack, Auth, ByteString, ConnAck, Connect, DecodeError, Disconnect, Packet,
    Properties, Protocol, Publish, QoS, ReasonCode, SubAck, Subscribe, UnsubAck, Unsubscribe, Will,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::time::{sleep_until, Instant};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use crate::auth;
use crate::broker::Broker;
use crate::config::Redirect;
use crate::message::Message;
use crate::metrics;
use crate::session::{next_connection_id, SessionHandle};

/// Stop draining the session queue while this much is waiting to be written: a slow reader
/// keeps its backlog in its own bounded queue, not in an ever-growing write buffer.
const WRITE_HIGH_WATER: usize = 64 * 1024;
/// Packets moved from the session queue per wake-up, so one busy subscriber cannot starve the
/// reads of its own connection.
const DRAIN_BUDGET: usize = 256;

/// Why a connection ended.
#[derive(Debug)]
enum Exit {
    /// DISCONNECT from the client; `send_will` for MQTT 5 reason 0x04.
    Disconnect {
        send_will: bool,
    },
    /// The peer closed the socket or it failed.
    Closed,
    /// The client broke the protocol; MQTT 5 clients are told why.
    Violation(Violation),
    /// Nothing received for 1.5 times the keep alive [MQTT-3.1.2-24].
    KeepAliveTimeout,
    /// Another connection took the session over [MQTT-3.1.4-2].
    TakenOver,
    /// The operator sends clients to another server [MQTT-4.11].
    Redirected(Redirect),
    Shutdown,
}

#[derive(Debug)]
struct Violation {
    reason: ReasonCode,
    message: String,
}

impl Violation {
    fn new(reason: ReasonCode, message: impl Into<String>) -> Violation {
        Violation {
            reason,
            message: message.into(),
        }
    }
}

impl From<DecodeError> for Violation {
    fn from(e: DecodeError) -> Violation {
        Violation::new(e.reason_code(), e.to_string())
    }
}

/// Serves one client connection until it ends. Never panics on client input.
pub async fn serve<S>(broker: Arc<Broker>, stream: S, peer: SocketAddr, shutdown: CancellationToken)
where
    S: AsyncRead + AsyncWrite + Send + Unpin,
{
    metrics::add(&broker.metrics.connections_current, 1);
    metrics::add(&broker.metrics.connections_total, 1);
    let (mut reader, mut writer) = tokio::io::split(stream);
    let mut rbuf = BytesMut::with_capacity(4096);
    let first = tokio::time::timeout(
        broker.config.connect_timeout,
        read_connect(&broker, &mut reader, &mut rbuf),
    )
    .await;
    match first {
        Ok(Ok(connect)) => {
            if let Some(conn) =
                accept(&broker, *connect, peer, &mut reader, &mut writer, &mut rbuf).await
            {
                conn.run(reader, writer, rbuf, shutdown).await;
            }
        }
        Ok(Err(DecodeError::UnsupportedProtocolLevel(level))) => {
            // The server MUST answer with return code 0x01 and close [MQTT-3.1.2-2].
            debug!(%peer, level, "unsupported protocol level");
            let code = ConnAck {
                session_present: false,
                code: ReasonCode::UnsupportedProtocolVersion,
                properties: Properties::default(),
            };
            write_and_close(&mut writer, &Packet::ConnAck(code), Protocol::V3_1_1).await;
        }
        Ok(Err(e)) => {
            metrics::add(&broker.metrics.protocol_errors, 1);
            debug!(%peer, error = %e, "bad first packet");
        }
        Err(_) => debug!(%peer, "no CONNECT within the connect timeout"),
    }
    metrics::sub(&broker.metrics.connections_current, 1);
}

/// Reads until one whole packet is there, which must be CONNECT [MQTT-3.1.0-1].
async fn read_connect<R: AsyncRead + Unpin>(
    broker: &Broker,
    reader: &mut R,
    rbuf: &mut BytesMut,
) -> Result<Box<Connect>, DecodeError> {
    match read_packet(broker, reader, rbuf, Protocol::V3_1_1).await? {
        Packet::Connect(connect) => Ok(connect),
        other => Err(DecodeError::ReservedPacketType(other.packet_type() as u8)),
    }
}

/// Reads one whole packet outside the main loop (handshake steps).
async fn read_packet<R: AsyncRead + Unpin>(
    broker: &Broker,
    reader: &mut R,
    rbuf: &mut BytesMut,
    protocol: Protocol,
) -> Result<Packet, DecodeError> {
    loop {
        if let Some(packet) = decode(rbuf, protocol, broker.config.max_packet_size)? {
            return Ok(packet);
        }
        match reader.read_buf(rbuf).await {
            Ok(0) | Err(_) => return Err(DecodeError::Truncated),
            Ok(n) => metrics::add(&broker.metrics.bytes_received, n as u64),
        }
    }
}

/// The CONNECT-time AUTH exchange (MQTT 5 enhanced authentication). Returns the user name and
/// the server's final data, or the reason code to refuse the connection with.
async fn enhanced_auth<S: AsyncRead + AsyncWrite>(
    broker: &Broker,
    connect: &Connect,
    reader: &mut ReadHalf<S>,
    writer: &mut WriteHalf<S>,
    rbuf: &mut BytesMut,
) -> Result<(String, Vec<u8>), ReasonCode> {
    let method = connect
        .properties
        .authentication_method
        .as_deref()
        .unwrap_or_default();
    let (exchange, challenge) = auth::begin(
        &broker.config,
        method,
        connect.properties.authentication_data.as_ref(),
    )?;
    let mut buf = BytesMut::new();
    challenge
        .encode(Protocol::V5, &mut buf)
        .map_err(|_| ReasonCode::UnspecifiedError)?;
    writer
        .write_all(&buf)
        .await
        .map_err(|_| ReasonCode::UnspecifiedError)?;
    let reply = tokio::time::timeout(
        broker.config.connect_timeout,
        read_packet(broker, reader, rbuf, Protocol::V5),
    )
    .await
    .map_err(|_| ReasonCode::NotAuthorized)?
    .map_err(|e| e.reason_code())?;
    match reply {
        Packet::Auth(auth) => auth::complete(exchange, &auth),
        _ => Err(ReasonCode::ProtocolError),
    }
}

async fn write_and_close<W: AsyncWrite + Unpin>(
    writer: &mut W,
    packet: &Packet,
    protocol: Protocol,
) {
    let mut buf = BytesMut::new();
    if packet.encode(protocol, &mut buf).is_ok() {
        let _ = tokio::time::timeout(Duration::from_secs(1), writer.write_all(&buf)).await;
    }
    let _ = writer.shutdown().await;
}

/// A client id for a client that sent none [MQTT-3.1.3-6].
fn assign_client_id(prefix: &str) -> ByteString {
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    ByteString::from(format!("{prefix}{random:016x}"))
}

/// Decides on a CONNECT, answers CONNACK, and on success attaches the session.
async fn accept<S: AsyncRead + AsyncWrite>(
    broker: &Arc<Broker>,
    connect: Connect,
    peer: SocketAddr,
    reader: &mut ReadHalf<S>,
    writer: &mut WriteHalf<S>,
    rbuf: &mut BytesMut,
) -> Option<Connection> {
    let protocol = connect.protocol;
    let config = &broker.config;
    let refuse = |code: ReasonCode| {
        Packet::ConnAck(ConnAck {
            session_present: false,
            code,
            properties: Properties::default(),
        })
    };
    let mut props = Properties::default();
    let client_id = if connect.client_id.is_empty() {
        // 3.1 requires an id; 3.1.1 only allows an empty one with clean session [MQTT-3.1.3-8].
        let refused = protocol == Protocol::V3_1
            || (protocol == Protocol::V3_1_1 && !connect.clean_start)
            || !config.allow_zero_length_clientid;
        if refused {
            write_and_close(
                writer,
                &refuse(ReasonCode::ClientIdentifierNotValid),
                protocol,
            )
            .await;
            return None;
        }
        let id = assign_client_id(&config.auto_id_prefix);
        if protocol.is_v5() {
            props.assigned_client_identifier = Some(id.clone());
        }
        id
    } else {
        connect.client_id.clone()
    };
    let mut auth_method = None;
    if protocol.is_v5() && connect.properties.authentication_method.is_some() {
        match enhanced_auth(broker, &connect, reader, writer, rbuf).await {
            Ok((user, server_final)) => {
                debug!(%peer, user, "authenticated with {}", scram::METHOD);
                auth_method = connect.properties.authentication_method.clone();
                let data = auth::properties(server_final);
                props.authentication_method = data.authentication_method;
                props.authentication_data = data.authentication_data;
            }
            Err(code) => {
                metrics::add(&broker.metrics.auth_failures, 1);
                write_and_close(writer, &refuse(code), protocol).await;
                return None;
            }
        }
    }

    let mut keep_alive = connect.keep_alive;
    if protocol.is_v5() && keep_alive > config.max_keepalive {
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
        write_and_close(writer, &Packet::ConnAck(connack), protocol).await;
        return None;
    }
    let expiry_interval = match protocol {
        Protocol::V5 => connect.properties.session_expiry_interval.unwrap_or(0),
        _ if connect.clean_start => 0,
        _ => u32::MAX,
    };
    let (session, session_present) = broker.open_session(&client_id, connect.clean_start);
    let id = next_connection_id();
    let kick = CancellationToken::new();
    session.set_connection(id, kick.clone());
    let resend = {
        let mut state = session.lock();
        state.expiry_interval = expiry_interval;
        state.max_packet_size = connect
            .properties
            .maximum_packet_size
            .map_or(usize::MAX, |m| m as usize);
        let receive_maximum = connect
            .properties
            .receive_maximum
            .map_or(usize::MAX, usize::from);
        state.attach(id, protocol, receive_maximum)
    };
    session.set_online(true);
    session.set_username(connect.username.clone());
    if protocol.is_v5() {
        // Advertise only what differs from the defaults of MQTT 5.0 section 3.2.2.3.
        props.topic_alias_maximum = Some(config.topic_alias_maximum).filter(|m| *m > 0);
        props.receive_maximum = Some(config.receive_maximum).filter(|m| *m < u16::MAX);
        props.maximum_qos = Some(config.max_qos).filter(|q| *q < QoS::ExactlyOnce);
        let unless = |available: bool| (!available).then_some(false);
        props.retain_available = unless(config.retain_available);
        props.wildcard_subscription_available = unless(config.wildcard_subscription_available);
        props.subscription_identifiers_available = unless(config.subscription_identifier_available);
        props.shared_subscription_available = unless(config.shared_subscription_available);
        if connect.properties.request_response_information == Some(true) {
            props.response_information = config
                .response_topic_prefix
                .as_ref()
                .map(|prefix| format!("{prefix}/{client_id}").into());
        }
        if config.max_packet_size < cauldron_proto::MAX_VARINT as usize {
            props.maximum_packet_size = Some(config.max_packet_size as u32);
        }
    }
    info!(
        "New client connected from {peer} as {client_id} (p{}, c{}, k{keep_alive}{})",
        protocol.level(),
        u8::from(connect.clean_start),
        connect
            .username
            .as_ref()
            .map(|u| format!(", u'{u}'"))
            .unwrap_or_default()
    );
    let mut conn = Connection {
        broker: Arc::clone(broker),
        session,
        id,
        kick,
        protocol,
        client_id,
        peer,
        will: connect.will,
        keep_alive: (keep_alive > 0).then(|| Duration::from_millis(u64::from(keep_alive) * 1500)),
        session_expiry_zero: expiry_interval == 0,
        auth_method,
        reauth: None,
        alias_out_max: connect.properties.topic_alias_maximum.unwrap_or(0),
        aliases_out: HashMap::new(),
        problem_information: connect
            .properties
            .request_problem_information
            .unwrap_or(true),
        aliases: HashMap::new(),
        wbuf: BytesMut::with_capacity(4096),
        scratch: Vec::new(),
    };
    // CONNACK first, then whatever the resumed session still owes the client.
    conn.send(&Packet::ConnAck(ConnAck {
        session_present,
        code: ReasonCode::Success,
        properties: props,
    }));
    for packet in &resend {
        conn.send(packet);
    }
    Some(conn)
}

struct Connection {
    broker: Arc<Broker>,
    session: Arc<SessionHandle>,
    id: u64,
    kick: CancellationToken,
    protocol: Protocol,
    client_id: ByteString,
    peer: SocketAddr,
    will: Option<Will>,
    keep_alive: Option<Duration>,
    /// MQTT 5: the session expiry at CONNECT was 0, so DISCONNECT may not raise it [MQTT-3.14.2-2].
    session_expiry_zero: bool,
    problem_information: bool,
    /// The enhanced authentication method of CONNECT, if any, and a re-authentication under way.
    auth_method: Option<ByteString>,
    reauth: Option<scram::ServerExchange>,
    /// MQTT 5 topic aliases set by this client.
    aliases: HashMap<u16, ByteString>,
    /// Topic aliases we may set towards the client (its Topic Alias Maximum), and those set.
    alias_out_max: u16,
    aliases_out: HashMap<ByteString, u16>,
    wbuf: BytesMut,
    scratch: Vec<Packet>,
}

impl Connection {
    async fn run<S: AsyncRead + AsyncWrite>(
        mut self,
        mut reader: ReadHalf<S>,
        mut writer: WriteHalf<S>,
        mut rbuf: BytesMut,
        shutdown: CancellationToken,
    ) {
        let far_future = Duration::from_secs(86400 * 365);
        let mut deadline = Instant::now() + self.keep_alive.unwrap_or(far_future);
        // Packets that arrived together with CONNECT.
        let mut exit = self.process(&mut rbuf, &mut deadline);
        while exit.is_none() {
            if self.wbuf.len() < WRITE_HIGH_WATER {
                self.drain_session();
            }
            exit = tokio::select! {
                biased;
                _ = self.kick.cancelled() => Some(match self.broker.redirection() {
                    Some(redirect) => Exit::Redirected(redirect),
                    None => Exit::TakenOver,
                }),
                _ = shutdown.cancelled() => Some(Exit::Shutdown),
                written = writer.write_buf(&mut self.wbuf), if !self.wbuf.is_empty() => match written {
                    Ok(n) if n > 0 => {
                        metrics::add(&self.broker.metrics.bytes_sent, n as u64);
                        None
                    }
                    _ => Some(Exit::Closed),
                },
                read = reader.read_buf(&mut rbuf) => match read {
                    Ok(0) | Err(_) => Some(Exit::Closed),
                    Ok(n) => {
                        metrics::add(&self.broker.metrics.bytes_received, n as u64);
                        self.process(&mut rbuf, &mut deadline)
                    }
                },
                _ = self.session.wake.notified() => None,
                _ = sleep_until(deadline), if self.keep_alive.is_some() => Some(Exit::KeepAliveTimeout),
            };
            if rbuf.capacity() - rbuf.len() < 1024 {
                rbuf.reserve(4096);
            }
        }
        let exit = exit.unwrap_or(Exit::Closed);
        self.finish(exit, &mut writer).await;
    }

    /// Decodes and handles every complete packet in `rbuf`.
    fn process(&mut self, rbuf: &mut BytesMut, deadline: &mut Instant) -> Option<Exit> {
        loop {
            let packet = match decode(rbuf, self.protocol, self.broker.config.max_packet_size) {
                Ok(Some(packet)) => packet,
                Ok(None) => return None,
                Err(e) => return Some(Exit::Violation(e.into())),
            };
            if let Some(keep_alive) = self.keep_alive {
                *deadline = Instant::now() + keep_alive;
            }
            match self.handle(packet) {
                Ok(None) => {}
                Ok(Some(exit)) => return Some(exit),
                Err(violation) => return Some(Exit::Violation(violation)),
            }
        }
    }

    fn handle(&mut self, packet: Packet) -> Result<Option<Exit>, Violation> {
        match packet {
            Packet::Publish(publish) => self.on_publish(publish)?,
            Packet::PubAck(ack) => {
                self.session.lock().on_puback(ack.packet_id);
            }
            Packet::PubRec(ack) => {
                let reply = self
                    .session
                    .lock()
                    .on_pubrec(ack.packet_id, ack.reason.is_error());
                if let Some(reply) = reply {
                    self.send(&reply);
                }
            }
            Packet::PubComp(ack) => {
                self.session.lock().on_pubcomp(ack.packet_id);
            }
            Packet::PubRel(ack) => {
                let known = self.session.lock().release_qos2(ack.packet_id);
                let mut comp = Ack::new(ack.packet_id);
                if !known {
                    comp.reason = ReasonCode::PacketIdentifierNotFound;
                }
                self.send(&Packet::PubComp(comp));
            }
            Packet::Subscribe(subscribe) => self.on_subscribe(subscribe)?,
            Packet::Unsubscribe(unsubscribe) => self.on_unsubscribe(unsubscribe),
            Packet::PingReq => self.send(&Packet::PingResp),
            Packet::Disconnect(disconnect) => return self.on_disconnect(disconnect).map(Some),
            Packet::Connect(_) => {
                return Err(Violation::new(
                    ReasonCode::ProtocolError,
                    "[MQTT-3.1.0-2] second CONNECT",
                ));
            }
            Packet::Auth(auth) => self.on_auth(auth)?,
            other => {
                return Err(Violation::new(
                    ReasonCode::ProtocolError,
                    format!("{:?} is only sent by servers", other.packet_type()),
                ));
            }
        }
        Ok(None)
    }

    fn on_publish(&mut self, mut publish: Publish) -> Result<(), Violation> {
        if let Some(alias) = publish.properties.topic_alias {
            if alias > self.broker.config.topic_alias_maximum {
                return Err(Violation::new(
                    ReasonCode::TopicAliasInvalid,
                    "[MQTT-3.3.2-9] topic alias above the maximum",
                ));
            }
            if publish.topic.is_empty() {
                publish.topic = self.aliases.get(&alias).cloned().ok_or_else(|| {
                    Violation::new(
                        ReasonCode::ProtocolError,
                        "[MQTT-3.3.2-12] topic alias not set on this connection",
                    )
                })?;
            } else {
                self.aliases.insert(alias, publish.topic.clone());
            }
        }
        if !publish.properties.subscription_identifiers.is_empty() {
            return Err(Violation::new(
                ReasonCode::ProtocolError,
                "[MQTT-3.3.4-6] subscription identifier from a client",
            ));
        }
        let config = &self.broker.config;
        if publish.qos > config.max_qos {
            return Err(Violation::new(
                ReasonCode::QoSNotSupported,
                "[MQTT-3.2.2-11] QoS above the maximum QoS",
            ));
        }
        if publish.retain && !config.retain_available {
            return Err(Violation::new(
                ReasonCode::RetainNotSupported,
                "[MQTT-3.2.2-14] retain is not available",
            ));
        }
        metrics::add(&self.broker.metrics.messages_received, 1);
        let (qos, packet_id) = (publish.qos, publish.packet_id.unwrap_or(0));
        let allowed = self.may_publish(&publish.topic);
        let message = Message::from_publish(publish, Some(self.client_id.clone()));
        // Denied messages are dropped; the QoS flow still completes [MQTT-3.3.5-2].
        let route = |broker: &Broker, message| allowed.then(|| broker.publish(message));
        match qos {
            QoS::AtMostOnce => {
                route(&self.broker, message);
            }
            QoS::AtLeastOnce => {
                let matched = route(&self.broker, message);
                self.send(&Packet::PubAck(self.ack(packet_id, matched)));
            }
            QoS::ExactlyOnce => {
                let mut state = self.session.lock();
                if state.pending_qos2() >= usize::from(self.broker.config.receive_maximum)
                    && !state.knows_qos2(packet_id)
                {
                    return Err(Violation::new(ReasonCode::ReceiveMaximumExceeded, "[MQTT-3.3.4-9] more unacknowledged QoS 2 PUBLISHes than the Receive Maximum"));
                }
                // Forward once per packet id until PUBREL (method B of [MQTT-4.3.3]).
                let is_new = state.receive_qos2(packet_id);
                drop(state);
                let matched = if is_new {
                    route(&self.broker, message)
                } else {
                    Some(1)
                };
                self.send(&Packet::PubRec(self.ack(packet_id, matched)));
            }
        }
        Ok(())
    }

    fn may_publish(&self, topic: &str) -> bool {
        let authorizer = self.broker.authorizer();
        authorizer.allows_everything() || authorizer.can_publish(&self.session.client_info(), topic)
    }

    /// PUBACK/PUBREC for a message routed to `matched` sessions (`None`: not authorized).
    /// MQTT 5 says why; 3.1.1 has no way to, so a denied publish looks accepted there.
    fn ack(&self, packet_id: u16, matched: Option<usize>) -> Ack {
        let mut ack = Ack::new(packet_id);
        if self.protocol.is_v5() {
            ack.reason = match matched {
                None => ReasonCode::NotAuthorized,
                Some(0) => ReasonCode::NoMatchingSubscribers,
                Some(_) => ReasonCode::Success,
            };
        }
        ack
    }

    fn on_subscribe(&mut self, subscribe: Subscribe) -> Result<(), Violation> {
        let subscription_id = subscribe
            .properties
            .subscription_identifiers
            .first()
            .copied();
        let mut codes = Vec::with_capacity(subscribe.filters.len());
        let mut retained = Vec::new();
        let config = &self.broker.config;
        for sub in &subscribe.filters {
            let shared = cauldron_proto::topic::parse_shared(&sub.filter).is_some();
            if shared && self.protocol.is_v5() && sub.options.no_local {
                return Err(Violation::new(
                    ReasonCode::ProtocolError,
                    "[MQTT-3.8.3-4] no local on a shared subscription",
                ));
            }
            let refused = if shared && !config.shared_subscription_available {
                Some(ReasonCode::SharedSubscriptionsNotSupported)
            } else if subscription_id.is_some() && !config.subscription_identifier_available {
                Some(ReasonCode::SubscriptionIdentifiersNotSupported)
            } else if !self.broker.authorizer().allows_everything()
                && !self
                    .broker
                    .authorizer()
                    .can_subscribe(&self.session.client_info(), &sub.filter)
            {
                Some(ReasonCode::NotAuthorized)
            } else if !config.wildcard_subscription_available
                && cauldron_proto::topic::has_wildcard(&sub.filter)
            {
                Some(ReasonCode::WildcardSubscriptionsNotSupported)
            } else {
                None
            };
            if let Some(code) = refused {
                codes.push(code);
                continue;
            }
            let (code, messages) = self.broker.subscribe(&self.session, sub, subscription_id);
            codes.push(code);
            retained.extend(messages);
        }
        self.send(&Packet::SubAck(SubAck {
            packet_id: subscribe.packet_id,
            codes,
            properties: Properties::default(),
        }));
        // Retained messages follow the SUBACK through the session queue (window and order kept).
        for delivery in retained {
            self.session.deliver(delivery);
        }
        Ok(())
    }

    fn on_unsubscribe(&mut self, unsubscribe: Unsubscribe) {
        let codes = unsubscribe
            .filters
            .iter()
            .map(
                |filter| match self.broker.unsubscribe(&self.session, filter) {
                    true => ReasonCode::Success,
                    false => ReasonCode::NoSubscriptionExisted,
                },
            )
            .collect();
        self.send(&Packet::UnsubAck(UnsubAck {
            packet_id: unsubscribe.packet_id,
            codes,
            properties: Properties::default(),
        }));
    }

    /// Re-authentication on a live connection [MQTT-4.12.1]: AUTH 0x19 starts it, AUTH 0x18
    /// carries the proof, and AUTH 0x00 ends it. A failure closes the connection (0x87).
    fn on_auth(&mut self, auth: Auth) -> Result<(), Violation> {
        let method = auth.properties.authentication_method.as_ref();
        if self.auth_method.is_none() || method != self.auth_method.as_ref() {
            return Err(Violation::new(
                ReasonCode::ProtocolError,
                "[MQTT-4.12.1-1] AUTH with another method than CONNECT's",
            ));
        }
        let step = match (auth.reason, self.reauth.take()) {
            (ReasonCode::ReAuthenticate, None) => auth::begin(
                &self.broker.config,
                method.map(|m| &m[..]).unwrap_or_default(),
                auth.properties.authentication_data.as_ref(),
            )
            .map(|(exchange, challenge)| {
                self.reauth = Some(exchange);
                challenge
            }),
            (ReasonCode::ContinueAuthentication, Some(exchange)) => auth::complete(exchange, &auth)
                .map(|(_, server_final)| auth::packet(ReasonCode::Success, server_final)),
            _ => Err(ReasonCode::ProtocolError),
        };
        match step {
            Ok(packet) => {
                self.send(&packet);
                Ok(())
            }
            Err(code) => {
                metrics::add(&self.broker.metrics.auth_failures, 1);
                let reason = if code == ReasonCode::ProtocolError {
                    code
                } else {
                    ReasonCode::NotAuthorized
                };
                Err(Violation::new(reason, "re-authentication failed"))
            }
        }
    }

    fn on_disconnect(&mut self, disconnect: Disconnect) -> Result<Exit, Violation> {
        if let Some(expiry) = disconnect.properties.session_expiry_interval {
            if self.session_expiry_zero && expiry > 0 {
                return Err(Violation::new(
                    ReasonCode::ProtocolError,
                    "[MQTT-3.14.2-2] session expiry raised from 0 at DISCONNECT",
                ));
            }
            self.session.lock().expiry_interval = expiry;
        }
        Ok(Exit::Disconnect {
            send_will: disconnect.reason == ReasonCode::DisconnectWithWill,
        })
    }

    /// Moves queued messages into the write buffer.
    fn drain_session(&mut self) {
        let mut packets = std::mem::take(&mut self.scratch);
        let (produced, dropped) = self
            .session
            .lock()
            .drain(self.id, &mut packets, DRAIN_BUDGET);
        if produced == DRAIN_BUDGET {
            // More may be waiting: come back after serving reads and writes.
            self.session.wake.notify_one();
        }
        metrics::add(&self.broker.metrics.messages_sent, produced as u64);
        metrics::add(&self.broker.metrics.messages_dropped, dropped);
        for mut packet in packets.drain(..) {
            if let Packet::Publish(publish) = &mut packet {
                self.apply_topic_alias(publish);
            }
            self.send(&packet);
        }
        self.scratch = packets;
    }

    /// Replaces a topic the client has seen before by its alias, or gives it a new alias while
    /// the client's Topic Alias Maximum allows [MQTT-3.3.2-11 .. 3.3.2-13].
    fn apply_topic_alias(&mut self, publish: &mut Publish) {
        if self.alias_out_max == 0 {
            return;
        }
        if let Some(alias) = self.aliases_out.get(&publish.topic) {
            publish.properties.topic_alias = Some(*alias);
            publish.topic = ByteString::new();
        } else if self.aliases_out.len() < usize::from(self.alias_out_max) {
            let alias = self.aliases_out.len() as u16 + 1;
            self.aliases_out.insert(publish.topic.clone(), alias);
            publish.properties.topic_alias = Some(alias);
        }
    }

    fn send(&mut self, packet: &Packet) {
        if let Err(e) = packet.encode(self.protocol, &mut self.wbuf) {
            debug!(client = %self.client_id, error = %e, "packet not encodable, dropped");
        }
    }

    /// Tells an MQTT 5 client why the server closes, publishes the will if due, flushes, and
    /// releases the session.
    async fn finish<S: AsyncWrite>(mut self, exit: Exit, writer: &mut WriteHalf<S>) {
        let (reason, send_will) = match &exit {
            Exit::Disconnect { send_will } => (None, *send_will),
            Exit::Closed => (None, true),
            Exit::Violation(v) => {
                metrics::add(&self.broker.metrics.protocol_errors, 1);
                debug!(client = %self.client_id, peer = %self.peer, reason = ?v.reason, "{}", v.message);
                (Some((v.reason, v.message.clone())), true)
            }
            Exit::KeepAliveTimeout => (
                Some((ReasonCode::KeepAliveTimeout, "keep alive timeout".into())),
                true,
            ),
            Exit::TakenOver => (
                Some((ReasonCode::SessionTakenOver, "session taken over".into())),
                true,
            ),
            Exit::Redirected(redirect) => (
                Some((redirect.reason_code(), "moved to another server".into())),
                true,
            ),
            Exit::Shutdown => (
                Some((
                    ReasonCode::ServerShuttingDown,
                    "server shutting down".into(),
                )),
                true,
            ),
        };
        info!(client = %self.client_id, ?exit, "Client disconnected");
        if let (Some((reason, message)), true) = (reason, self.protocol.is_v5()) {
            let mut disconnect = Disconnect::with_reason(reason);
            if let Exit::Redirected(redirect) = &exit {
                disconnect.properties.server_reference = Some(redirect.reference.as_str().into());
            }
            if self.problem_information {
                disconnect.properties.reason_string = Some(message.into());
            }
            self.send(&Packet::Disconnect(disconnect));
        }
        if let Some(will) = self.will.take().filter(|_| send_will) {
            self.publish_will(will);
        }
        self.broker.close_session(&self.session, self.id);
        if !matches!(exit, Exit::Closed) {
            let _ = tokio::time::timeout(Duration::from_secs(1), async {
                let _ = writer.write_all(&self.wbuf).await;
                let _ = writer.shutdown().await;
            })
            .await;
        }
    }

    /// Publishes the will now, or parks it for its Will Delay Interval when the session
    /// outlives the connection: it is dropped if the client returns in time, and published
    /// early if the session ends first [MQTT-3.1.3-9].
    fn publish_will(&self, will: Will) {
        if !self.may_publish(&will.topic) {
            debug!(client = %self.client_id, topic = %will.topic, "will not authorized, dropped");
            return;
        }
        let mut properties = will.properties;
        // The delay belongs to the will, not to the message subscribers receive.
        let delay = properties.will_delay_interval.take().unwrap_or(0);
        let publish = Publish {
            dup: false,
            qos: will.qos,
            retain: will.retain,
            topic: will.topic,
            packet_id: None,
            properties,
            payload: will.payload,
        };
        let message = Message::from_publish(publish, Some(self.client_id.clone()));
        let expiry = self.session.lock().expiry_interval;
        if delay == 0 || expiry == 0 {
            self.broker.publish(message);
            return;
        }
        self.session.set_pending_will(self.id, message);
        let (broker, session, id) = (Arc::clone(&self.broker), Arc::clone(&self.session), self.id);
        let wait = Duration::from_secs(u64::from(delay.min(expiry)));
        tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            if let Some(will) = session.take_pending_will_of(id) {
                broker.publish(will);
            }
        });
    }
}
