//! One task per network connection: read -> decode -> act on the session -> encode -> batched
//! write. It owns the socket and nothing else; shared state lives in `Broker` and the session.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use cauldron_proto::{
    decode, peek_short_ack, scram, ByteString, ConnAck, DecodeError, Disconnect, Packet, PacketType,
    Properties, Protocol, Publish, QoS, ReasonCode, Will,
};
use tokio::io::AsyncWriteExt;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use crate::authz::{Authorizer, ListenerAuth};
use crate::broker::Broker;
use crate::config::Redirect;
use crate::message::Message;
use crate::metrics::{self, DropReason, Refusal};
use crate::session::{Doorbell, Outgoing, Packets, Session, SessionHandle};
use crate::store::{StoreError, Ticket};

mod handshake;
mod inbound;
mod keepalive;
mod parking;
mod running;
mod stream;

pub(crate) use keepalive::KeepAlives;

pub(crate) use running::{ConnectionTask, Running};
pub(crate) use stream::{IntoStream, Stream, Transport};

use handshake::{accept, read_connect, write_and_close};
use inbound::Completions;

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
        Violation { reason, message: message.into() }
    }
}

impl From<DecodeError> for Violation {
    fn from(e: DecodeError) -> Violation {
        Violation::new(e.reason_code(), e.to_string())
    }
}

/// Serves one client connection until it ends. Never panics on client input.
/// What the listener a connection came through decides about it.
pub(crate) struct Origin {
    pub identity: CertIdentity,
    /// The listener's own access control (`per_listener_settings`), if it has one.
    pub auth: Option<Arc<ListenerAuth>>,
    /// The listener's `mount_point`, if it has one.
    pub mount_point: Option<Arc<str>>,
}

/// How a TLS listener names its client by certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CertIdentity {
    /// The listener does not: CONNECT's user name and password count.
    NotUsed,
    /// The listener does: this is the user name (`None`: the client showed no certificate).
    Named(Option<String>),
}

/// CONNECT, authentication and CONNACK on a transport that is ready for MQTT; the connection
/// to run, or `None` if the client is refused or gone. Runs inside the boxed opening state of
/// a [`ConnectionTask`], so none of its state outlives the handshake.
pub(crate) async fn open(
    broker: Arc<Broker>,
    mut stream: Stream,
    peer: SocketAddr,
    origin: Origin,
    shutdown: CancellationToken,
) -> Option<Running> {
    let mut rbuf = BytesMut::with_capacity(READ_MIN);
    let first =
        tokio::time::timeout(broker.config.connect_timeout, read_connect(&broker, &mut stream, &mut rbuf))
            .await;
    match first {
        Ok(Ok(connect)) => {
            broker.metrics.packet_in(PacketType::Connect as u8);
            let connect = unbox(connect);
            let conn = accept(&broker, connect, peer, origin, &mut stream, &mut rbuf).await?;
            return Some(Running::new(conn, stream, rbuf, shutdown));
        }
        Ok(Err(DecodeError::UnsupportedProtocolLevel(level))) => {
            // The server MUST answer with return code 0x01 and close [MQTT-3.1.2-2].
            debug!(%peer, level, "unsupported protocol level");
            let code = ConnAck {
                session_present: false,
                code: ReasonCode::UnsupportedProtocolVersion,
                properties: Properties::default(),
            };
            broker.metrics.refuse(Refusal::Protocol);
            write_and_close(&mut stream, &Packet::ConnAck(code), Protocol::V3_1_1).await;
        }
        Ok(Err(e)) => {
            metrics::add(&broker.metrics.protocol_errors, 1);
            debug!(%peer, error = %e, "bad first packet");
        }
        Err(_) => debug!(%peer, "no CONNECT within the connect timeout"),
    }
    None
}

/// Moves a value out of its box and frees the box now (a `*boxed` move frees it only at the
/// end of the binding's scope).
#[allow(clippy::boxed_local)] // taking the box by value is the point
fn unbox<T>(boxed: Box<T>) -> T {
    *boxed
}

/// A connection past its handshake: what it keeps for its whole life ([`Resting`], which
/// it reads through `Deref`), and its buffers and waits.
struct Connection {
    rest: Resting,
    wbuf: BytesMut,
    /// Store commits this connection waits for, oldest first, and the packets held back until
    /// they are done: an acknowledgement is only sent for what is durable.
    pending: VecDeque<Ticket>,
    held: BytesMut,
    /// PUBACKs among the held packets: QoS 1 messages the client still counts as in flight.
    held_acks: u32,
    /// An acknowledgement was handled since the last drain: the inflight window has room.
    window_opened: bool,
    /// Reading is paused until this subscriber's queue has room, or until the instant.
    paused: Option<Box<(Arc<SessionHandle>, Instant)>>,
    /// QoS 0 and 1 messages read and accepted, routed together (`Broker::publish_all`) once
    /// the packets at hand are handled, with the packet id to acknowledge for QoS 1.
    publishes: Vec<(Message, Option<u16>)>,
}

/// What a connection keeps for its whole life, and all a parked one keeps (see `parking`):
/// the rest of a `Connection` is buffers and waits, which an idle one has empty.
struct Resting {
    broker: Arc<Broker>,
    session: Arc<SessionHandle>,
    /// The session's resume count when this connection got it.
    resumes: u32,
    id: u64,
    /// Rung by publishers, takeover and shutdown (see `Doorbell`).
    doorbell: Arc<Doorbell>,
    protocol: Protocol,
    peer: SocketAddr,
    /// Boxed: a `Will` inline (its properties) would cost every connection half a kilobyte.
    will: Option<Box<Will>>,
    /// How long the client may stay silent (1.5 times its keep alive [MQTT-3.1.2-24]), in
    /// milliseconds, 0 for ever: a `Duration` would take four times the bytes.
    silence_ms: u32,
    /// MQTT 5: the session expiry at CONNECT was 0, so DISCONNECT may not raise it [MQTT-3.14.2-2].
    session_expiry_zero: bool,
    /// A 3.x bridge said so at CONNECT (`Connect::bridge`): what it published is not sent back.
    bridge: bool,
    problem_information: bool,
    /// Topic aliases we may set towards the client (its Topic Alias Maximum).
    alias_out_max: u16,
    /// What few connections need, made when one first does (see `Extras`).
    extras: Option<Box<Extras>>,
}

impl std::ops::Deref for Connection {
    type Target = Resting;

    fn deref(&self) -> &Resting {
        &self.rest
    }
}

impl std::ops::DerefMut for Connection {
    fn deref_mut(&mut self) -> &mut Resting {
        &mut self.rest
    }
}

impl Connection {
    /// How long the client may stay silent, if it may not for ever.
    fn keep_alive(&self) -> Option<Duration> {
        (self.silence_ms > 0).then(|| Duration::from_millis(u64::from(self.silence_ms)))
    }

    /// A connection with empty buffers, new or waking from parking.
    fn new(rest: Resting) -> Connection {
        Connection {
            rest,
            // Grow to what the traffic needs; an idle connection keeps none.
            wbuf: BytesMut::new(),
            pending: VecDeque::new(),
            held: BytesMut::new(),
            held_acks: 0,
            window_opened: false,
            paused: None,
            publishes: Vec::new(),
        }
    }

    /// Whether nothing is buffered or awaited: what `rest` drops is empty.
    fn is_quiet(&self) -> bool {
        self.wbuf.is_empty() && self.pending.is_empty() && self.held.is_empty() && self.paused.is_none()
    }

    /// The connection without its (empty: `is_quiet`) buffers.
    fn into_rest(self) -> Resting {
        debug_assert!(self.is_quiet());
        self.rest
    }
}

/// The parts of a connection that most never use, boxed so that an idle connection, of which a
/// broker has many, does not carry them (about 120 bytes).
#[derive(Default)]
struct Extras {
    /// The enhanced authentication method of CONNECT, if any, and a re-authentication under way.
    auth_method: Option<ByteString>,
    reauth: Option<Box<scram::ServerExchange>>,
    /// MQTT 5 topic aliases, both ways.
    aliases: Aliases,
    /// MQTT 5: inbound QoS 2 ids already resent once on this connection.
    qos2_resent: Vec<u16>,
    /// The listener's own access control (`per_listener_settings`), if it has one.
    auth: Option<Arc<ListenerAuth>>,
    /// Prefixed to every topic and filter the client sends, taken off every topic it is sent
    /// (Mosquitto's `mount_point`): the client sees only its own part of the tree.
    mount: Option<Arc<str>>,
}

/// MQTT 5 topic aliases of one connection.
#[derive(Default)]
struct Aliases {
    /// Set by the client.
    inbound: HashMap<u16, ByteString>,
    /// Set by us, up to the client's Topic Alias Maximum.
    outbound: HashMap<ByteString, u16>,
}

/// Read buffer sizes: a quiet connection keeps a small one (most of a broker's connections are
/// idle), a busy one doubles it whenever a read fills it, up to the maximum.
const READ_MIN: usize = 512;
const READ_MAX: usize = 64 * 1024;

thread_local! {
    /// What one drain took from a session, on its way to the write buffer: one per thread,
    /// as a drain never spans an `.await`, rather than one per connection.
    static DRAINED: std::cell::Cell<Vec<Outgoing>> = const { std::cell::Cell::new(Vec::new()) };
}

/// Commits and tap hand-overs a connection waits on before it stops reading more packets.
const MAX_PENDING: usize = 1024;

/// Longest a publisher stops reading for one subscriber whose queue it filled: long enough for
/// a subscriber that reads to catch up, short enough that a stalled one slows no one for long
/// (after it, that subscriber's overflow fills and what does not fit is dropped, counted).
const CONGESTION_PAUSE: Duration = Duration::from_secs(1);

impl Connection {
    /// The authorizer for this connection: its listener's own, or the broker's.
    fn authorizer(&self) -> &dyn Authorizer {
        match self.extras.as_ref().and_then(|e| e.auth.as_ref()) {
            Some(auth) => &*auth.authorizer,
            None => self.broker.authorizer(),
        }
    }

    /// The listener's mount point, if it has one.
    fn mount(&self) -> Option<&Arc<str>> {
        self.extras.as_ref()?.mount.as_ref()
    }

    fn extras(&mut self) -> &mut Extras {
        self.extras.get_or_insert_with(Box::default)
    }

    /// Frees the buffers that hold nothing, before the task sleeps.
    fn release_buffers(&mut self) {
        if self.wbuf.is_empty() {
            self.wbuf = BytesMut::new();
        }
        if self.pending.is_empty() {
            self.held = BytesMut::new();
            self.pending = VecDeque::new();
        }
        self.publishes = Vec::new();
    }

    /// Decodes and handles every complete packet in `rbuf`.
    fn process(&mut self, rbuf: &mut BytesMut, deadline: &mut Instant) -> Option<Exit> {
        let exit = self.process_packets(rbuf, deadline);
        // What was accepted before an exit was accepted: it is routed all the same.
        self.route_publishes();
        exit
    }

    fn process_packets(&mut self, rbuf: &mut BytesMut, deadline: &mut Instant) -> Option<Exit> {
        let mut acks = Completions::new();
        let exit = self.process_into(rbuf, deadline, &mut acks);
        self.complete(&mut acks);
        exit
    }

    /// Handles the packets in `rbuf`, gathering short acks into `acks` and completing them
    /// before any other packet is handled.
    fn process_into(
        &mut self,
        rbuf: &mut BytesMut,
        deadline: &mut Instant,
        acks: &mut Completions,
    ) -> Option<Exit> {
        // One clock read for all the packets one read brought: they arrived together.
        let mut stamped = false;
        loop {
            if self.paused.is_some() {
                return None; // the rest waits in `rbuf` until the pause ends
            }
            if let Some((kind, packet_id)) = peek_short_ack(rbuf) {
                rbuf.advance(4);
                self.stamp_keep_alive(&mut stamped, deadline);
                self.broker.metrics.packet_in(kind as u8);
                if acks.push(kind, packet_id) {
                    self.complete(acks);
                }
                continue;
            }
            // Whatever else the client sent comes after the acks before it.
            self.complete(acks);
            let packet = match decode(rbuf, self.protocol, self.broker.config.max_packet_size) {
                Ok(Some(packet)) => packet,
                Ok(None) => return None,
                Err(e) => return Some(Exit::Violation(e.into())),
            };
            self.stamp_keep_alive(&mut stamped, deadline);
            self.broker.metrics.packet_in(packet.packet_type() as u8);
            // An acknowledgement may open the inflight window for queued messages.
            self.window_opened |=
                matches!(packet, Packet::PubAck(_) | Packet::PubRec(_) | Packet::PubComp(_));
            match self.handle(packet) {
                Ok(None) => {}
                Ok(Some(exit)) => return Some(exit),
                Err(violation) => return Some(Exit::Violation(violation)),
            }
        }
    }

    /// A packet arrived: the keep-alive deadline moves on, once per read (`stamped`).
    fn stamp_keep_alive(&self, stamped: &mut bool, deadline: &mut Instant) {
        if let Some(keep_alive) = self.keep_alive().filter(|_| !*stamped) {
            *deadline = Instant::now() + keep_alive;
            *stamped = true;
        }
    }

    /// The oldest pending commit finished: once none is pending, the held packets go out. A
    /// failed commit closes the connection without acknowledging what it held; the client
    /// sends it again on its next connection.
    fn committed(&mut self, result: Result<(), StoreError>) -> Option<Exit> {
        self.pending.pop_front();
        if let Err(e) = result {
            return Some(Exit::Violation(Violation::new(
                ReasonCode::UnspecifiedError,
                format!("not stored: {e}"),
            )));
        }
        if self.pending.is_empty() {
            self.wbuf.extend_from_slice(&self.held);
            self.held.clear();
            self.held_acks = 0;
        }
        None
    }

    /// Holds the packets sent from now on until `ticket`'s commit is done.
    fn hold_until(&mut self, ticket: Option<Ticket>) {
        self.pending.extend(ticket);
    }

    /// Stops reading this client for a while when its message filled a subscriber's queue.
    fn pause_for(&mut self, congested: Option<Arc<SessionHandle>>) {
        if let Some(subscriber) = congested {
            self.paused = Some(Box::new((subscriber, Instant::now() + CONGESTION_PAUSE)));
        }
    }

    /// Moves queued messages into the write buffer; true if more may be waiting.
    fn drain_session(&mut self) -> bool {
        // A cluster node unsure whether another node took this client over sends nothing.
        if self.session.is_fenced(self.id) || !self.broker.may_deliver() {
            // Nothing taken, so the next message must ring again (`Session::ring_needed`); the
            // node's return to delivering rings every connection as well.
            let ((), _) = self.session.edit(Session::ring_again);
            return false;
        }
        let mut packets = DRAINED.take();
        // One lock: the messages, whether the queue is back within its limit, and the store
        // operations the drain journalled.
        let (((produced, expired, too_large), room_freed), ticket) = self
            .session
            .edit(|state| (state.drain_into(self.id, &mut packets, DRAIN_BUDGET), state.take_room_freed()));
        if room_freed {
            self.session.notify_room();
        }
        // Packet ids of QoS 2 messages are stored before the messages leave.
        self.hold_until(ticket);
        metrics::add(&self.broker.metrics.traffic().messages_sent, produced as u64);
        self.broker.metrics.dropped_for(DropReason::Expired, expired);
        self.broker.metrics.dropped_for(DropReason::TooLarge, too_large);
        for outgoing in packets.drain(..) {
            match outgoing {
                Outgoing::Publish3 { message, qos, retain, packet_id } if self.mount().is_none() => {
                    self.send_publish3(&message, qos, retain, packet_id)
                }
                Outgoing::Encoded(packets) => self.send_encoded(packets),
                other => other.into_packets().into_iter().for_each(|packet| self.send_delivered(packet)),
            }
        }
        DRAINED.set(packets);
        // At the budget, more may be waiting: the loop comes back after reads and writes.
        produced >= DRAIN_BUDGET
    }

    /// Sends a packet from the session's queue, its topic as this client names it: without the
    /// listener's mount point, replaced by an alias where one is set.
    fn send_delivered(&mut self, mut packet: Packet) {
        if let Packet::Publish(publish) = &mut packet {
            if let Some(mount) = self.mount() {
                // Only mounted filters match, so every topic starts with the mount point.
                if let Some(own) = publish.topic.strip_prefix(&**mount) {
                    publish.topic = ByteString::from(own);
                }
            }
            self.apply_topic_alias(publish);
        }
        self.send(&packet);
    }

    /// PUBLISH packets the session encoded (see `session::Packets`). Into an empty
    /// buffer they go as they are, without a copy.
    fn send_encoded(&mut self, packets: Packets) {
        for (qos, n) in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce].into_iter().zip(packets.by_qos)
        {
            if n > 0 {
                self.broker.metrics.publish_out(qos, n as u64);
            }
        }
        let buf = self.out_buffer();
        match buf.is_empty() {
            true => *buf = packets.bytes,
            false => buf.extend_from_slice(&packets.bytes),
        }
    }

    /// Replaces a topic the client has seen before by its alias, or gives it a new alias while
    /// the client's Topic Alias Maximum allows [MQTT-3.3.2-11 .. 3.3.2-13].
    fn apply_topic_alias(&mut self, publish: &mut Publish) {
        if self.alias_out_max == 0 {
            return;
        }
        let max = usize::from(self.alias_out_max);
        let aliases = &mut self.extras().aliases.outbound;
        if let Some(alias) = aliases.get(&publish.topic) {
            publish.properties.topic_alias = Some(*alias);
            publish.topic = ByteString::new();
        } else if aliases.len() < max {
            let alias = aliases.len() as u16 + 1;
            aliases.insert(publish.topic.clone(), alias);
            publish.properties.topic_alias = Some(alias);
        }
    }

    /// The write buffer: straight for the socket, or the held one while a commit is pending.
    fn out_buffer(&mut self) -> &mut BytesMut {
        match self.pending.is_empty() {
            true => &mut self.wbuf,
            false => &mut self.held,
        }
    }

    /// A PUBLISH to an MQTT 3.x client, encoded from the message's own bytes (see `Outgoing`).
    fn send_publish3(&mut self, message: &Message, qos: QoS, retain: bool, packet_id: Option<u16>) {
        self.broker.metrics.publish_out(qos, 1);
        let (topic, payload) = (&message.topic, &message.payload);
        let buf = self.out_buffer();
        if let Err(e) = cauldron_proto::encode_publish_v3(buf, topic, payload, qos, retain, packet_id) {
            debug!(client = %self.session.client_id, error = %e, "packet not encodable, dropped");
        }
    }

    /// Queues a packet: straight for the socket, or held while a commit is pending.
    fn send(&mut self, packet: &Packet) {
        match packet {
            Packet::Publish(publish) => self.broker.metrics.publish_out(publish.qos, 1),
            other => self.broker.metrics.packet_out(other.packet_type() as u8),
        }
        if !self.pending.is_empty() {
            self.held_acks += u32::from(matches!(packet, Packet::PubAck(_)));
        }
        let protocol = self.protocol;
        if let Err(e) = packet.encode(protocol, self.out_buffer()) {
            debug!(client = %self.session.client_id, error = %e, "packet not encodable, dropped");
        }
    }

    /// Tells an MQTT 5 client why the server closes, publishes the will if due, flushes, and
    /// releases the session. `stream` is `None` when the socket was lost on the way to or from
    /// parking.
    async fn finish(mut self, exit: Exit, stream: Option<&mut Stream>) {
        let (reason, send_will) = match &exit {
            Exit::Disconnect { send_will } => (None, *send_will),
            Exit::Closed => (None, true),
            Exit::Violation(v) => {
                metrics::add(&self.broker.metrics.protocol_errors, 1);
                debug!(client = %self.session.client_id, peer = %self.peer, reason = ?v.reason, "{}", v.message);
                (Some((v.reason, v.message.clone())), true)
            }
            Exit::KeepAliveTimeout => {
                (Some((ReasonCode::KeepAliveTimeout, "keep alive timeout".into())), true)
            }
            // The will goes out only if the session ends with this connection: a successor
            // that resumed it is the client back again [MQTT-3.1.3-9], as Mosquitto decides.
            Exit::TakenOver => {
                let resumed = self.session.read(Session::resumes) != self.resumes;
                (Some((ReasonCode::SessionTakenOver, "session taken over".into())), !resumed)
            }
            Exit::Redirected(redirect) => {
                (Some((redirect.reason_code(), "moved to another server".into())), true)
            }
            Exit::Shutdown => (Some((ReasonCode::ServerShuttingDown, "server shutting down".into())), true),
        };
        // Worded as Mosquitto words them, so existing log filters keep working.
        let id = &self.session.client_id;
        match &exit {
            Exit::Disconnect { .. } => info!("Client {id} disconnected."),
            Exit::Closed => info!("Client {id} closed its connection."),
            Exit::KeepAliveTimeout => info!("Client {id} has exceeded timeout, disconnecting."),
            Exit::TakenOver => info!("Client {id} already connected, closing old connection."),
            Exit::Violation(v) => info!("Client {id} disconnected due to protocol error: {}.", v.message),
            Exit::Redirected(r) => info!("Client {id} redirected to {}.", r.reference),
            Exit::Shutdown => info!("Client {id} disconnected: server shutting down."),
        }
        if let (Some((reason, message)), true) = (reason, self.protocol.is_v5()) {
            let mut disconnect = Disconnect::with_reason(reason);
            if let Exit::Redirected(redirect) = &exit {
                disconnect.properties.server_reference = Some(redirect.reference.as_str().into());
            }
            if self.problem_information {
                disconnect.properties.reason_string = Some(message.into());
            }
            // Whatever is still held was never made durable and is not sent.
            self.pending.clear();
            self.send(&Packet::Disconnect(disconnect));
        }
        if let Some(will) = self.will.take().filter(|_| send_will) {
            self.publish_will(*will);
        }
        self.broker.close_session(&self.session, self.id);
        if let Some(directory) = self.broker.directory() {
            Arc::clone(directory).release(&self.session, self.id);
        }
        if let Some(stream) = stream.filter(|_| !matches!(exit, Exit::Closed)) {
            let _ = tokio::time::timeout(Duration::from_secs(1), async {
                let _ = stream.write_all(&self.wbuf).await;
                let _ = stream.flush().await;
                let _ = stream.shutdown().await;
            })
            .await;
        }
    }

    /// The message a will stands for and its delay in seconds, if the client may publish it.
    fn will_message(&self, mut will: Will) -> Option<(Message, u32)> {
        if let Some(mount) = self.mount() {
            will.topic = inbound::mounted(mount, &will.topic);
        }
        if !self.may_publish(&will.topic) {
            debug!(client = %self.session.client_id, topic = %will.topic, "will not authorized, dropped");
            return None;
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
        let mut message = Message::from_publish(publish, Some(self.session.client_id.clone()));
        if message.retain {
            message.publisher_user = self.session.client_info().username;
        }
        Some((message, delay))
    }

    /// In a cluster, leaves the will with the session registry too, so that another node
    /// publishes it if this one dies.
    pub(super) fn register_will(&self) {
        let (Some(directory), Some(will)) = (self.broker.directory(), &self.will) else { return };
        if let Some((message, delay)) = self.will_message((**will).clone()) {
            // The delay runs no longer than the session [MQTT-3.1.3-9].
            let delay = delay.min(self.session.read(Session::expiry_interval));
            Arc::clone(directory).keep_will(&self.session, self.id, message, delay);
        }
    }

    /// Publishes the will now, or parks it for its Will Delay Interval when the session
    /// outlives the connection: it is dropped if the client returns in time, and published
    /// early if the session ends first [MQTT-3.1.3-9].
    fn publish_will(&self, will: Will) {
        let Some((message, delay)) = self.will_message(will) else { return };
        let expiry = self.session.read(Session::expiry_interval);
        if delay == 0 || expiry == 0 {
            drop(self.broker.publish(message).durable);
            return;
        }
        let (parked, _) = self.session.edit(|state| {
            if state.resumes() != self.resumes || state.is_superseded() {
                // Taken over by a new connection for the client id: it is back within the
                // delay, so there is no will to wait for [MQTT-3.1.2-8].
                return false;
            }
            state.set_pending_will(self.id, message);
            true
        });
        if !parked {
            return;
        }
        let (broker, session, id) = (Arc::clone(&self.broker), Arc::clone(&self.session), self.id);
        let wait = Duration::from_secs(u64::from(delay.min(expiry)));
        tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            broker.publish_delayed_will(&session, id);
        });
    }
}
