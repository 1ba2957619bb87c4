//! A client's session, which outlives its connections [MQTT-4.1]: subscriptions, the queue of
//! messages waiting for it, the QoS 1/2 inflight window and QoS 2 receive state.
//!
//! `Session` is the protocol state machine with no I/O: it takes acks and deliveries and returns
//! the packets to send, and, for a persistent session when the broker has a store, the store
//! operations that make each change durable (its journal, taken with `take_ops`).
//! `SessionHandle` shares it between publishers and the connection task under a std `Mutex`
//! held only for short, non-async sections.

mod encoded;
mod gauge;
mod handle;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cauldron_proto::{Ack, ByteString, Packet, Protocol, QoS, ReasonCode, SubOptions};

use encoded::Encoded;
pub(crate) use encoded::Packets;
pub(crate) use gauge::QueuedBytes;
pub(crate) use handle::{next_connection_id, Doorbell, SessionHandle};

use crate::message::Message;
use crate::metrics::DropReason;
use crate::store::{
    self, DeliveryState, Op, StoredDelivery, StoredMessage, StoredSession, StoredSubscription,
};

/// A message waiting in a session's queue, with what this subscriber's subscription decided.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub message: Arc<Message>,
    pub qos: QoS,
    pub retain: bool,
    /// Boxed slices rather than a `Vec` and an inline filter: a fan-out moves one of these into
    /// every subscriber's queue, and most have neither (48 bytes instead of 80).
    pub subscription_ids: Box<[u32]>,
    /// The `$share/...` filter this came through, so it can go to another member if this
    /// session cannot take it.
    pub shared: Option<Box<ByteString>>,
    /// Key of its stored copy (0: not stored).
    pub seq: u64,
}

impl Delivery {
    /// The message, and what this subscriber's delivery of it is.
    pub fn into_parts(self) -> (Arc<Message>, Terms) {
        let Delivery { message, qos, retain, subscription_ids, shared, seq: _ } = self;
        (message, Terms { qos, retain, subscription_ids, shared })
    }
}

/// One subscriber's delivery of a message, without the message: a fan-out works these out for
/// each subscriber and offers them all the same message (`Session::offer`).
#[derive(Debug, Clone)]
pub struct Terms {
    pub qos: QoS,
    pub retain: bool,
    pub subscription_ids: Box<[u32]>,
    pub shared: Option<Box<ByteString>>,
}

impl Terms {
    /// A delivery of `message` on these terms, not stored yet.
    fn with(self, message: &Arc<Message>) -> Delivery {
        let Terms { qos, retain, subscription_ids, shared } = self;
        Delivery { message: Arc::clone(message), qos, retain, subscription_ids, shared, seq: 0 }
    }
}

#[derive(Debug)]
enum InflightState {
    /// PUBLISH sent, waiting for PUBACK (QoS 1) or PUBREC (QoS 2).
    Published(Delivery),
    /// PUBREL sent, waiting for PUBCOMP.
    Released(Delivery),
}

#[derive(Debug)]
struct Inflight {
    packet_id: u16,
    state: InflightState,
}

impl Inflight {
    fn delivery(&self) -> &Delivery {
        match &self.state {
            InflightState::Published(d) | InflightState::Released(d) => d,
        }
    }

    fn is_released(&self) -> bool {
        matches!(self.state, InflightState::Released(_))
    }
}

/// Queue capacity (deliveries) kept once a queue is empty again; above it, the memory goes back.
const SHRINK_ABOVE: usize = 64;

/// Limits that shape one session.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// QoS 1/2 messages sent but unacknowledged at once.
    pub max_inflight: usize,
    /// Messages waiting beyond the inflight window.
    pub max_queued: usize,
    /// Payload bytes waiting beyond the inflight window; 0 is no limit.
    pub max_queued_bytes: usize,
    /// Whether QoS 0 messages are queued while the client is offline.
    pub queue_qos0: bool,
    /// When the queue is full, drop its oldest message rather than the new one.
    pub drop_oldest: bool,
    /// Payload bytes queued across all sessions above which QoS 0 is shed; a quarter more and
    /// QoS 1/2 are refused too. 0 is no ceiling.
    pub memory_ceiling: usize,
}

/// The outcome of offering a message to a session.
#[derive(Debug, PartialEq, Eq)]
pub enum Enqueued {
    Queued,
    /// Queued beyond the queue's limit for a connected subscriber: the publisher should pause
    /// until the queue has room again ([`SessionHandle::has_room`]), for a bounded time.
    Congested,
    /// Not queued, and why (counted).
    Dropped(DropReason),
}

/// What a drain hands the connection to send.
#[derive(Debug)]
pub enum Outgoing {
    /// Boxed: a v5 PUBLISH with its properties is 464 bytes, and a drain holds up to 256.
    Packet(Box<Packet>),
    /// A PUBLISH to an MQTT 3.x client, which the connection encodes straight from the
    /// message's bytes (`cauldron_proto::encode_publish_v3`): no `Publish` with its
    /// `Properties` is built for each of a message's many deliveries.
    Publish3 { message: Arc<Message>, qos: QoS, retain: bool, packet_id: Option<u16> },
    /// PUBLISH packets to a plain MQTT 3.x client, written as they are (see `Encoded`).
    Encoded(Packets),
}

impl Outgoing {
    /// As packets (a mount point to take off, tests).
    pub fn into_packets(self) -> Vec<Packet> {
        match self {
            Outgoing::Packet(packet) => vec![*packet],
            Outgoing::Publish3 { message, qos, retain, packet_id } => {
                vec![Packet::Publish(message.to_publish(qos, retain, packet_id, Instant::now(), &[], false))]
            }
            Outgoing::Encoded(Packets { mut bytes, .. }) => {
                let decode =
                    |b: &mut bytes::BytesMut| cauldron_proto::decode(b, Protocol::V3_1_1, usize::MAX);
                std::iter::from_fn(|| decode(&mut bytes).ok().flatten()).collect()
            }
        }
    }

    fn encoded_len(&self, protocol: Protocol) -> usize {
        match self {
            Outgoing::Packet(packet) => packet.encoded_len(protocol),
            Outgoing::Publish3 { message, qos, .. } => {
                cauldron_proto::encoded_publish_v3_len(message.topic.len(), message.payload.len(), *qos)
            }
            Outgoing::Encoded(packets) => packets.bytes.len(),
        }
    }
}

/// Protocol state of one session, without I/O.
#[derive(Debug)]
pub struct Session {
    /// The handle's own, shared (a clone is a count, not a copy).
    client_id: ByteString,
    subscriptions: BTreeMap<ByteString, (SubOptions, Option<u32>)>,
    /// Shared by every session of the broker.
    limits: Arc<Limits>,
    /// The inflight window of the attached connection: our limit capped by its Receive Maximum.
    window: usize,
    /// Seconds the session outlives its connection: 0 ends it with the connection (3.x clean
    /// session 1), `u32::MAX` never expires (3.x clean session 0) [MQTT-3.1.2-23].
    expiry_interval: u32,
    /// When an offline session expires.
    expires_at: Option<Instant>,
    queue: VecDeque<Delivery>,
    /// QoS 0 messages queued before anything in `queue`, encoded for the attached connection
    /// (see `Encoded`); made when first used, dropped when the connection leaves or parks.
    encoded: Option<Box<Encoded>>,
    /// Whether QoS 0 messages may be queued encoded: the attached connection is MQTT 3.x, its
    /// topics are sent as they are, and QoS 0 is neither kept offline nor dropped oldest first.
    encodes_qos0: bool,
    /// The attached connection is MQTT 3.x and nothing rewrites its topics: a drain may encode
    /// its packets (see `Encoded::put`).
    plain_3x: bool,
    /// Payload bytes waiting, in `queue` and `encoded`.
    queued_bytes: usize,
    /// Payload bytes queued in all sessions of the broker; this session's share is
    /// `queued_bytes`, given back when the session is dropped.
    memory: Arc<QueuedBytes>,
    inflight: VecDeque<Inflight>,
    next_packet_id: u16,
    /// How many ids from `next_packet_id` on are known to be free: none was in `inflight` when
    /// they were counted, and ids only get there from `allocate_packet_id`, in turn.
    free_ids: u16,
    /// QoS 2 packet ids received but not yet released: a repeat PUBLISH is not forwarded again.
    incoming_qos2: BTreeSet<u16>,
    /// The connection currently attached, if any; packets are only produced for it.
    /// Connection ids start at 1 (`next_connection_id`), so none is 0: half the bytes.
    connection: Option<std::num::NonZeroU64>,
    protocol: Protocol,
    /// Largest packet the client accepts (MQTT 5 Maximum Packet Size).
    max_packet_size: u32,
    dropped: u64,
    /// The queue went past its limit for a connected subscriber (see `Enqueued::Congested`).
    congested: bool,
    /// A publisher waited the whole pause for this subscriber: until its queue has room again
    /// it gets no overflow, and what does not fit is dropped.
    stalled: bool,
    /// A will waiting out its Will Delay Interval, tagged with the connection that left it
    /// [MQTT-3.1.3-9].
    /// Boxed: rare, and a `Message` inline would cost every session half a kilobyte.
    pending_will: Option<Box<(u64, Message)>>,
    /// How many times a new connection resumed this session: a connection that was taken over
    /// sees it change and knows its client is already back.
    /// Only ever compared for a change, so it may wrap.
    resumes: u32,
    /// A new connection for the client id ended this session (clean start): a will its last
    /// connection would park for a delay is not sent [MQTT-3.1.2-8].
    superseded: bool,
    /// The broker keeps a store: persistent sessions journal their changes.
    store: bool,
    /// Whether this session has a stored record (so discarding it must delete that).
    stored: bool,
    next_seq: u64,
    ops: Vec<Op>,
    /// A publisher rang the connection's doorbell since the connection last drained: the drain
    /// that ring brings takes every message queued meanwhile, so they need no ring of their own
    /// (in a fan-out, each ring is a lock and a cache line shared with the subscriber's core).
    rung: bool,
}

impl Session {
    pub fn new(
        client_id: impl Into<ByteString>,
        limits: impl Into<Arc<Limits>>,
        store: bool,
        memory: Arc<QueuedBytes>,
    ) -> Session {
        let limits = limits.into();
        Session {
            client_id: client_id.into(),
            subscriptions: BTreeMap::new(),
            window: limits.max_inflight,
            limits,
            expiry_interval: 0,
            expires_at: None,
            queue: VecDeque::new(),
            encoded: None,
            encodes_qos0: false,
            plain_3x: false,
            queued_bytes: 0,
            memory,
            inflight: VecDeque::new(),
            next_packet_id: 1,
            free_ids: 0,
            incoming_qos2: BTreeSet::new(),
            connection: None,
            protocol: Protocol::V3_1_1,
            max_packet_size: u32::MAX,
            dropped: 0,
            congested: false,
            stalled: false,
            pending_will: None,
            resumes: 0,
            superseded: false,
            store,
            stored: false,
            next_seq: 1,
            ops: Vec::new(),
            rung: false,
        }
    }

    pub fn is_online(&self) -> bool {
        self.connection.is_some()
    }

    /// Whether the session outlives its connection.
    pub fn persistent(&self) -> bool {
        self.expiry_interval > 0
    }

    /// Whether changes are journalled for the store.
    fn journaling(&self) -> bool {
        self.store && self.persistent()
    }

    /// The store operations produced since the last call (`SessionHandle` submits them).
    fn take_ops(&mut self) -> Vec<Op> {
        std::mem::take(&mut self.ops)
    }

    /// How many store operations are waiting to be taken.
    fn ops_len(&self) -> usize {
        self.ops.len()
    }

    fn journal_delivery(&mut self, delivery: &Delivery, state: DeliveryState) {
        if self.journaling() && delivery.seq != 0 {
            self.ops.push(Op::PutDelivery {
                client: self.client_id.to_string(),
                seq: delivery.seq,
                message: Arc::clone(delivery.message.stored()),
                record: store::record::to_bytes(&StoredDelivery::new(delivery, state)),
            });
        }
    }

    /// Journals every delivery the session holds, in its present state (its stored rows were
    /// in an older shape).
    pub fn journal_deliveries(&mut self) {
        let owed = self.owed();
        for (delivery, state) in &owed {
            self.journal_delivery(delivery, *state);
        }
    }

    pub fn subscriptions(&self) -> &BTreeMap<ByteString, (SubOptions, Option<u32>)> {
        &self.subscriptions
    }

    /// Adds (or replaces) a subscription, journalled.
    pub fn subscribe(&mut self, filter: ByteString, options: SubOptions, id: Option<u32>) {
        self.subscriptions.insert(filter, (options, id));
        self.journal_record();
    }

    /// Removes a subscription, journalled.
    pub fn unsubscribe(&mut self, filter: &str) {
        self.subscriptions.remove(filter);
        self.journal_record();
    }

    pub fn expiry_interval(&self) -> u32 {
        self.expiry_interval
    }

    /// Changes how long the session outlives its connection (CONNECT, or an MQTT 5
    /// DISCONNECT), journalled.
    pub fn set_expiry_interval(&mut self, secs: u32) {
        self.expiry_interval = secs;
        self.journal_record();
    }

    /// The largest packet the attached client takes (its MQTT 5 Maximum Packet Size).
    pub fn set_max_packet_size(&mut self, bytes: u32) {
        self.max_packet_size = bytes;
    }

    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    pub fn resumes(&self) -> u32 {
        self.resumes
    }

    /// A new connection resumes the session.
    pub fn resume(&mut self) {
        self.resumes = self.resumes.wrapping_add(1);
    }

    /// A new connection for the client id ends this session (clean start).
    pub fn supersede(&mut self) {
        self.superseded = true;
    }

    pub fn is_superseded(&self) -> bool {
        self.superseded
    }

    /// Ends the session: journals the end of every delivery it holds and of its record (what
    /// it journalled and was not submitted yet is dropped, ended by these). Returns its
    /// subscriptions' filters, for the router to forget.
    /// An ended session journals nothing more: a publisher that found it in the router
    /// before it left may still queue a message for it.
    pub fn end(&mut self) -> Vec<ByteString> {
        self.ops.clear();
        if std::mem::take(&mut self.stored) {
            let held = self.inflight.iter().map(Inflight::delivery).chain(&self.queue);
            let ends: Vec<Op> = held.filter(|d| d.seq != 0).map(|d| self.delete_op(d)).collect();
            self.ops = ends;
            self.ops.push(Op::DeleteSession(self.client_id.to_string()));
        }
        self.store = false;
        std::mem::take(&mut self.subscriptions).into_keys().collect()
    }

    fn delete_op(&self, delivery: &Delivery) -> Op {
        Op::DeleteDelivery {
            client: self.client_id.to_string(),
            seq: delivery.seq,
            message: delivery.message.stored().id,
        }
    }

    /// Drops the queued (not yet sent) messages whose topic `readable` refuses, journalling each;
    /// returns how many. For an access list that changed while they waited.
    pub fn drop_queued_unless(&mut self, mut readable: impl FnMut(&str) -> bool) -> usize {
        let (kept, dropped): (VecDeque<Delivery>, VecDeque<Delivery>) =
            std::mem::take(&mut self.queue).into_iter().partition(|d| readable(&d.message.topic));
        self.queue = kept;
        for delivery in &dropped {
            self.forget_delivery(delivery);
        }
        let encoded = self.encoded.as_mut().map_or(0, |e| e.retain(&mut readable));
        self.recount_queued_bytes();
        let count = dropped.len() + encoded;
        self.dropped += count as u64;
        count
    }

    fn forget_delivery(&mut self, delivery: &Delivery) {
        if self.journaling() && delivery.seq != 0 {
            self.ops.push(self.delete_op(delivery));
        }
    }

    /// Journals the session record (expiry, subscriptions, pending will), if it persists.
    fn journal_record(&mut self) {
        if !self.journaling() {
            return;
        }
        let record = store::record::to_bytes(&self.record());
        self.ops.push(Op::PutSession(self.client_id.to_string(), record));
        self.stored = true;
    }

    /// The session's record: expiry, subscriptions, pending will.
    pub fn record(&self) -> StoredSession {
        let mut subscriptions: Vec<StoredSubscription> = self
            .subscriptions
            .iter()
            .map(|(filter, (options, id))| StoredSubscription {
                filter: filter.to_string(),
                options: options_byte(options),
                id: *id,
            })
            .collect();
        subscriptions.sort_by(|a, b| a.filter.cmp(&b.filter));
        StoredSession {
            expiry_interval: self.expiry_interval,
            expires_at_ms: self.expires_at.map(store::record::wall_ms),
            subscriptions,
            pending_will: self
                .pending_will
                .as_ref()
                .map(|pending| (StoredMessage::new(&pending.1), store::record::wall_ms(Instant::now()))),
        }
    }

    /// Every message the session still owes its client, in order: in flight (with their packet
    /// ids), then queued. For another cluster node to carry the session on.
    pub fn owed(&self) -> Vec<(Delivery, DeliveryState)> {
        let inflight = self.inflight.iter().map(|entry| match &entry.state {
            InflightState::Published(d) => (d.clone(), DeliveryState::Sent(entry.packet_id)),
            InflightState::Released(d) => (d.clone(), DeliveryState::Released(entry.packet_id)),
        });
        inflight.chain(self.queue.iter().map(|d| (d.clone(), DeliveryState::Queued))).collect()
    }

    /// Takes on a session another cluster node held (`record` and `owed` as it gave them),
    /// journalling it all when it persists here.
    pub fn adopt(
        &mut self,
        record: &StoredSession,
        owed: Vec<(Delivery, DeliveryState)>,
    ) -> Result<(), store::StoreError> {
        let numbered: Vec<_> = owed
            .into_iter()
            .zip(self.next_seq..)
            .map(|((delivery, state), seq)| (seq, Delivery { seq, ..delivery }, state))
            .collect();
        let journal: Vec<_> = numbered.iter().map(|(_, d, state)| (d.clone(), *state)).collect();
        self.restore(record, numbered, [])?;
        self.stored = false;
        self.journal_record();
        for (delivery, state) in &journal {
            self.journal_delivery(delivery, *state);
        }
        Ok(())
    }

    pub fn is_attached(&self, connection: u64) -> bool {
        self.attached() == Some(connection)
    }

    /// Attaches a new connection and returns what must be resent to it: every unacknowledged
    /// PUBLISH with DUP set and every pending PUBREL, in their original order [MQTT-4.4.0-1].
    pub fn attach(&mut self, connection: u64, protocol: Protocol, receive_maximum: usize) -> Vec<Packet> {
        debug_assert_ne!(connection, 0, "connection ids start at 1");
        self.connection = std::num::NonZeroU64::new(connection);
        self.expires_at = None;
        self.protocol = protocol;
        self.window = self.limits.max_inflight.min(receive_maximum).max(1);
        // Until `encode_qos0` says otherwise; what is encoded already is MQTT 3.x.
        (self.encodes_qos0, self.plain_3x) = (false, false);
        if protocol.is_v5() {
            self.drop_encoded();
        }
        let now = Instant::now();
        self.inflight
            .iter()
            .map(|entry| match &entry.state {
                InflightState::Published(d) => {
                    let mut publish = d.message.to_publish(
                        d.qos,
                        d.retain,
                        Some(entry.packet_id),
                        now,
                        &d.subscription_ids,
                        protocol.is_v5(),
                    );
                    publish.dup = true;
                    Packet::Publish(publish)
                }
                InflightState::Released(_) => Packet::PubRel(Ack::new(entry.packet_id)),
            })
            .collect()
    }

    /// Detaches `connection` if it is still the attached one; returns whether it was. Starts the
    /// expiry clock of a persistent session.
    pub fn detach(&mut self, connection: u64, now: Instant) -> bool {
        if self.attached() != Some(connection) {
            return false;
        }
        self.connection = None;
        if self.expiry_interval != u32::MAX {
            self.expires_at = Some(now + Duration::from_secs(u64::from(self.expiry_interval)));
        }
        // QoS 0 messages are not kept for an offline client unless configured.
        (self.encodes_qos0, self.plain_3x) = (false, false);
        if !self.limits.queue_qos0 {
            self.drop_encoded();
            self.queue.retain(|d| d.qos != QoS::AtMostOnce);
            self.recount_queued_bytes();
        }
        self.journal_record();
        true
    }

    /// Takes back the messages that came through shared subscriptions and were not yet
    /// acknowledged, so another member of the group can have them (MQTT 5.0 section 4.8.2).
    /// Messages already released (PUBREL sent) stay: the subscriber has them.
    pub fn take_shared(&mut self) -> Vec<Delivery> {
        let mut taken = Vec::new();
        let (shared, kept): (VecDeque<_>, VecDeque<_>) =
            self.queue.drain(..).partition(|d| d.shared.is_some());
        self.queue = kept;
        taken.extend(shared);
        let (shared, kept): (VecDeque<_>, VecDeque<_>) =
            self.inflight.drain(..).partition(|e| !e.is_released() && e.delivery().shared.is_some());
        self.inflight = kept;
        taken.extend(shared.into_iter().map(|e| match e.state {
            InflightState::Published(d) | InflightState::Released(d) => d,
        }));
        self.recount_queued_bytes();
        for delivery in &taken {
            self.forget_delivery(delivery);
        }
        taken
    }

    pub fn is_expired(&self, now: Instant) -> bool {
        self.connection.is_none() && self.expires_at.is_some_and(|at| at <= now)
    }

    /// Offers a message. The queue is bounded in count and bytes; what does not fit is dropped
    /// (the new message, or the oldest queued one) and counted.
    pub fn enqueue(&mut self, delivery: Delivery) -> Enqueued {
        let (message, terms) = delivery.into_parts();
        self.offer(&message, terms)
    }

    /// `enqueue` for one subscriber's terms of a message shared with others (a fan-out): the
    /// message is counted once more only if it is queued as itself.
    pub fn offer(&mut self, message: &Arc<Message>, terms: Terms) -> Enqueued {
        let offline_qos0 = !self.is_online() && terms.qos == QoS::AtMostOnce && !self.limits.queue_qos0;
        if offline_qos0 {
            self.dropped += 1;
            return Enqueued::Dropped(DropReason::QueueFull);
        }
        let size = message.payload.len();
        // Over the broker-wide ceiling, QoS 0 goes first, then everything.
        let ceiling = self.limits.memory_ceiling;
        // Summed only when there is a ceiling to compare with (a read of every stripe).
        let used = if ceiling > 0 { self.memory.total() } else { 0 };
        let hard = ceiling + ceiling / 4;
        if ceiling > 0 && (used >= hard || (used >= ceiling && terms.qos == QoS::AtMostOnce)) {
            self.dropped += 1;
            return Enqueued::Dropped(DropReason::Memory);
        }
        let bytes_full =
            |s: &Session| s.limits.max_queued_bytes > 0 && s.queued_bytes + size > s.limits.max_queued_bytes;
        let full = |s: &Session| s.waiting() >= s.limits.max_queued || bytes_full(s);
        let mut congested = false;
        let overflow = self.is_online() && !self.stalled && !self.limits.drop_oldest;
        if full(self) && overflow && self.within_overflow(size) {
            // A connected subscriber that is reading gets up to its limit again on top: the
            // publisher is paused meanwhile, so a burst is delivered rather than dropped.
            congested = true;
            self.congested = true;
        } else if full(self) {
            if !self.limits.drop_oldest {
                self.dropped += 1;
                return Enqueued::Dropped(DropReason::QueueFull);
            }
            // (`encoded` stays empty: dropping oldest first, QoS 0 is queued as the rest.)
            while full(self) {
                let Some(oldest) = self.queue.pop_front() else {
                    break;
                };
                self.set_queued_bytes(self.queued_bytes - oldest.message.payload.len());
                self.forget_delivery(&oldest);
                self.dropped += 1;
            }
            if full(self) {
                return Enqueued::Dropped(DropReason::QueueFull); // larger than the whole byte limit
            }
        }
        self.set_queued_bytes(self.queued_bytes + size);
        if !self.push_encoded(message, &terms) {
            let mut delivery = terms.with(message);
            if self.journaling() && delivery.qos != QoS::AtMostOnce {
                delivery.seq = self.next_seq;
                self.next_seq += 1;
                self.journal_delivery(&delivery, DeliveryState::Queued);
            }
            self.queue.push_back(delivery);
        }
        match congested {
            true => Enqueued::Congested,
            false => Enqueued::Queued,
        }
    }

    /// Queues a QoS 0 delivery encoded, if it may be (see `Encoded`): in order, as nothing
    /// is in `queue` yet; only what needs nothing more from the session (no expiry to count
    /// down, no share group to hand it back to, within the client's packet size).
    fn push_encoded(&mut self, message: &Message, terms: &Terms) -> bool {
        let plain = terms.qos == QoS::AtMostOnce
            && terms.shared.is_none()
            && message.expires_at.is_none()
            && self.max_packet_size == u32::MAX;
        if !(self.encodes_qos0 && plain && self.queue.is_empty()) {
            return false;
        }
        self.encoded.get_or_insert_with(Box::default).push(message, terms.retain)
    }

    /// Whether a message just queued must ring the connection: not when an earlier one rang
    /// and the connection has not drained since.
    pub fn ring_needed(&mut self) -> bool {
        !std::mem::replace(&mut self.rung, true)
    }

    /// The connection declined to drain: the next message queued rings it again.
    pub fn ring_again(&mut self) {
        self.rung = false;
    }

    /// Whether one more message of `size` bytes stays within twice the queue's limits.
    fn within_overflow(&self, size: usize) -> bool {
        let count = self.waiting() < self.limits.max_queued.saturating_mul(2);
        let bytes = self.limits.max_queued_bytes == 0
            || self.queued_bytes + size <= self.limits.max_queued_bytes.saturating_mul(2);
        count && bytes
    }

    /// Whether the queue is back within its limits (publishers paused on it may go on).
    pub fn has_room(&self) -> bool {
        let bytes = self.limits.max_queued_bytes == 0 || self.queued_bytes < self.limits.max_queued_bytes;
        self.waiting() < self.limits.max_queued && bytes
    }

    /// True once after the queue went past its limit and is back within it: time to tell the
    /// paused publishers. A stalled subscriber that caught up gets its overflow back.
    pub fn take_room_freed(&mut self) -> bool {
        let freed = (self.congested || self.stalled) && self.has_room();
        if freed {
            (self.congested, self.stalled) = (false, false);
        }
        freed
    }

    /// A publisher waited the whole pause for this subscriber (see `stalled`).
    pub fn mark_stalled(&mut self) {
        self.stalled = true;
    }

    pub fn queued(&self) -> usize {
        self.waiting()
    }

    pub fn inflight(&self) -> usize {
        self.inflight.len()
    }

    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes
    }

    /// Changes this session's queued bytes and the broker-wide total with it.
    fn set_queued_bytes(&mut self, bytes: usize) {
        if bytes >= self.queued_bytes {
            self.memory.add(bytes - self.queued_bytes);
        } else {
            self.memory.sub(self.queued_bytes - bytes);
        }
        self.queued_bytes = bytes;
    }

    fn recount_queued_bytes(&mut self) {
        let bytes: usize = self.queue.iter().map(|d| d.message.payload.len()).sum();
        self.set_queued_bytes(bytes + self.encoded.as_ref().map_or(0, |e| e.payload()));
    }

    /// Messages waiting beyond the inflight window.
    fn waiting(&self) -> usize {
        self.queue.len() + self.encoded.as_ref().map_or(0, |e| e.count())
    }

    /// Whether QoS 0 messages may be queued encoded for the attached connection (see
    /// `encodes_qos0`): its protocol is MQTT 3.x and nothing rewrites its topics.
    /// Called after `attach`, which keeps what an earlier connection left encoded only for one
    /// that can take it as it is (a takeover by the same kind of client).
    pub fn encode_qos0(&mut self, plain_3x: bool) {
        self.plain_3x = plain_3x;
        self.encodes_qos0 = plain_3x && !self.limits.queue_qos0 && !self.limits.drop_oldest;
        if !plain_3x {
            self.drop_encoded();
        }
    }

    /// Drops what is queued encoded, counted: QoS 0 for a connection that is gone.
    fn drop_encoded(&mut self) {
        if let Some(encoded) = self.encoded.take() {
            self.dropped += encoded.count() as u64;
            self.recount_queued_bytes();
        }
    }

    /// Gives back the encoded queue's buffer if it holds nothing (the connection parks).
    pub fn release_buffers(&mut self) {
        if self.encoded.as_ref().is_some_and(|e| e.count() == 0) {
            self.encoded = None;
        }
    }

    /// `drain_into`, as packets (for tests).
    #[cfg(test)]
    pub fn drain(&mut self, connection: u64, out: &mut Vec<Packet>, budget: usize) -> (usize, u64, u64) {
        let mut outgoing = Vec::new();
        let counts = self.drain_into(connection, &mut outgoing, budget);
        out.extend(outgoing.into_iter().flat_map(Outgoing::into_packets));
        counts
    }

    /// Moves queued messages into PUBLISH packets for `connection`, as far as the inflight
    /// window allows (QoS 0 needs no window). Expired and oversized messages are dropped.
    /// Returns how many packets were produced, and how many messages were dropped as expired
    /// and as too large.
    pub fn drain_into(
        &mut self,
        connection: u64,
        out: &mut Vec<Outgoing>,
        budget: usize,
    ) -> (usize, u64, u64) {
        if self.attached() != Some(connection) {
            return (0, 0, 0);
        }
        // From here on, a message queued needs a ring again (see `rung`).
        self.rung = false;
        let now = Instant::now();
        let (mut expired, mut too_large) = (0, 0);
        let mut produced = 0;
        // Queued before anything in `queue`, so sent first; all at once, being bytes already.
        let mut taken = 0;
        if let Some(encoded) = self.encoded.as_mut().filter(|e| e.count() > 0) {
            taken = encoded.payload();
            let packets = encoded.take();
            produced = packets.count();
            out.push(Outgoing::Encoded(packets));
        }
        while produced < budget {
            let Some(front) = self.queue.front() else {
                break;
            };
            if front.qos != QoS::AtMostOnce && self.inflight.len() >= self.window {
                break;
            }
            let delivery = self.queue.pop_front().expect("front exists");
            let message = &delivery.message;
            taken += message.payload.len();
            let packet_id = (delivery.qos != QoS::AtMostOnce).then(|| self.allocate_packet_id());
            // Expired messages are never delivered [MQTT-3.3.2-5]; one larger than the client's
            // Maximum Packet Size is not sent [MQTT-3.1.2-25].
            let is_expired = message.is_expired(now);
            let (qos, retain) = (delivery.qos, delivery.retain);
            // Below MQTT 5 there are no properties to build: the message's own bytes are
            // written, by the connection or (`plain_3x`) here.
            let v5 = self.protocol.is_v5().then(|| {
                let ids = &delivery.subscription_ids;
                Outgoing::Packet(Box::new(Packet::Publish(
                    message.to_publish(qos, retain, packet_id, now, ids, true),
                )))
            });
            let len = match &v5 {
                Some(packet) => packet.encoded_len(self.protocol),
                None => {
                    cauldron_proto::encoded_publish_v3_len(message.topic.len(), message.payload.len(), qos)
                }
            };
            if is_expired || len > self.max_packet_size as usize {
                self.forget_delivery(&delivery);
                match is_expired {
                    true => expired += 1,
                    false => too_large += 1,
                }
                continue;
            }
            if let Some(packet_id) = packet_id {
                // A QoS 2 packet id is stored before the PUBLISH leaves, so after a restart the
                // same id is resent and the receiver recognises it. QoS 1 needs no such write:
                // a restart sends it again as a new message, which at-least-once allows.
                if delivery.qos == QoS::ExactlyOnce {
                    self.journal_delivery(&delivery, DeliveryState::Sent(packet_id));
                }
            }
            // A plain 3.x connection's packets are encoded here, under the lock, with the queued
            // QoS 0 ones: the subscriber's core takes no count on the message the publisher's
            // core shares, and the connection gets one buffer.
            let plain = v5.is_none() && self.plain_3x;
            if !plain || !self.encoded.get_or_insert_with(Box::default).put(message, qos, retain, packet_id) {
                let message = Arc::clone(message);
                out.push(v5.unwrap_or(Outgoing::Publish3 { message, qos, retain, packet_id }));
            }
            if let Some(packet_id) = packet_id {
                self.inflight.push_back(Inflight { packet_id, state: InflightState::Published(delivery) });
            }
            produced += 1;
        }
        if let Some(encoded) = self.encoded.as_mut().filter(|e| e.has_put()) {
            out.push(Outgoing::Encoded(encoded.take()));
        }
        self.set_queued_bytes(self.queued_bytes - taken);
        self.dropped += expired + too_large;
        // A burst grew the queue: once it has gone out, give the memory back, so a
        // subscriber that was busy once does not keep a busy one's queue while it idles.
        if self.queue.is_empty() && self.queue.capacity() > SHRINK_ABOVE {
            self.queue = VecDeque::new();
        }
        (produced, expired, too_large)
    }

    /// A packet id for something other than a queued message, from the same sequence (a
    /// bridge's SUBSCRIBE towards its remote).
    pub fn reserve_packet_id(&mut self) -> u16 {
        self.allocate_packet_id()
    }

    /// The next packet id in turn that no inflight message holds. The inflight window is
    /// looked through once per run of free ids (about once per 65,535 ids), not per message.
    fn allocate_packet_id(&mut self) -> u16 {
        while self.free_ids == 0 {
            self.free_ids = self.free_ids_from(self.next_packet_id);
            if self.free_ids == 0 {
                self.next_packet_id = self.next_packet_id.checked_add(1).unwrap_or(1);
            }
        }
        self.free_ids -= 1;
        let id = self.next_packet_id;
        self.next_packet_id = self.next_packet_id.checked_add(1).unwrap_or(1);
        id
    }

    /// How many ids from `start` on, in the order ids are given (1 to 65,535, then 1 again),
    /// come before the first one an inflight message holds.
    fn free_ids_from(&self, start: u16) -> u16 {
        // Ids 1..=65535 as 0..65535, so that the distance wraps modulo their number.
        let ring = u32::from(u16::MAX);
        let distance = |id: u16| (u32::from(id) + ring - u32::from(start)) % ring;
        self.inflight.iter().map(|e| distance(e.packet_id)).min().map_or(u16::MAX, |d| d as u16)
    }

    fn position(&self, packet_id: u16, released: bool) -> Option<usize> {
        self.inflight.iter().position(|e| e.packet_id == packet_id && e.is_released() == released)
    }

    fn complete(&mut self, index: usize) {
        if let Some(entry) = self.inflight.remove(index) {
            self.forget_delivery(entry.delivery());
        }
    }

    /// PUBACK for a QoS 1 delivery: it is complete. Unknown ids are ignored.
    pub fn on_puback(&mut self, packet_id: u16) -> bool {
        let found = self.position(packet_id, false);
        found.map(|i| self.complete(i)).is_some()
    }

    /// PUBREC for a QoS 2 delivery: answer PUBREL and wait for PUBCOMP [MQTT-4.3.3-4]. A PUBREC
    /// with an error reason (MQTT 5) ends the flow instead.
    pub fn on_pubrec(&mut self, packet_id: u16, failed: bool) -> Option<Packet> {
        match self.position(packet_id, false) {
            Some(i) if failed => {
                self.complete(i);
                None
            }
            Some(i) => {
                let entry = self.inflight.remove(i).expect("position is in range");
                let InflightState::Published(delivery) = entry.state else {
                    unreachable!("position(.., false)")
                };
                self.journal_delivery(&delivery, DeliveryState::Released(packet_id));
                self.inflight.insert(i, Inflight { packet_id, state: InflightState::Released(delivery) });
                Some(Packet::PubRel(Ack::new(packet_id)))
            }
            // Already released (a repeated PUBREC): PUBREL again.
            None if self.position(packet_id, true).is_some() => Some(Packet::PubRel(Ack::new(packet_id))),
            None => {
                let mut ack = Ack::new(packet_id);
                ack.reason = ReasonCode::PacketIdentifierNotFound;
                Some(Packet::PubRel(ack))
            }
        }
    }

    /// PUBCOMP: the QoS 2 delivery is complete.
    pub fn on_pubcomp(&mut self, packet_id: u16) -> bool {
        let found = self.position(packet_id, true);
        found.map(|i| self.complete(i)).is_some()
    }

    /// An inbound QoS 2 PUBLISH: true if it is new and must be forwarded, false for a
    /// retransmission of one not yet released [MQTT-4.3.3-9].
    pub fn receive_qos2(&mut self, packet_id: u16) -> bool {
        let is_new = self.incoming_qos2.insert(packet_id);
        if is_new && self.journaling() {
            self.ops.push(Op::PutInboundQos2(self.client_id.to_string(), packet_id));
        }
        is_new
    }

    /// Whether an inbound QoS 2 packet id is awaiting PUBREL (a retransmission, not a new one).
    pub fn knows_qos2(&self, packet_id: u16) -> bool {
        self.incoming_qos2.contains(&packet_id)
    }

    /// Inbound QoS 2 messages waiting for PUBREL: what counts against our Receive Maximum.
    pub fn pending_qos2(&self) -> usize {
        self.incoming_qos2.len()
    }

    /// Inbound PUBREL: forget the id. Returns whether it was known.
    pub fn release_qos2(&mut self, packet_id: u16) -> bool {
        let known = self.incoming_qos2.remove(&packet_id);
        if known && self.journaling() {
            self.ops.push(Op::DeleteInboundQos2(self.client_id.to_string(), packet_id));
        }
        known
    }

    /// Parks a delayed will (see `SessionHandle::take_pending_will_of`).
    pub fn set_pending_will(&mut self, connection: u64, will: Message) {
        self.pending_will = Some(Box::new((connection, will)));
        self.journal_record();
    }

    /// The id of the connection attached, if any.
    fn attached(&self) -> Option<u64> {
        self.connection.map(std::num::NonZeroU64::get)
    }

    pub fn take_pending_will(&mut self, connection: Option<u64>) -> Option<Message> {
        let matches = match (&self.pending_will, connection) {
            (Some(_), None) => true,
            (Some(pending), Some(connection)) => pending.0 == connection,
            (None, _) => false,
        };
        let will = if matches { self.pending_will.take().map(|pending| pending.1) } else { None };
        if will.is_some() {
            self.journal_record();
        }
        will
    }

    /// Rebuilds stored state at start-up: the record, then each delivery in its stored order,
    /// then the QoS 2 ids awaiting PUBREL.
    pub fn restore(
        &mut self,
        record: &StoredSession,
        deliveries: Vec<(u64, Delivery, DeliveryState)>,
        inbound_qos2: impl IntoIterator<Item = u16>,
    ) -> Result<(), store::StoreError> {
        self.expiry_interval = record.expiry_interval;
        self.expires_at = record.expires_at_ms.map(store::record::instant);
        self.stored = true;
        for sub in &record.subscriptions {
            self.subscriptions.insert(sub.filter.as_str().into(), (options_from_byte(sub.options)?, sub.id));
        }
        if let Some((will, _)) = &record.pending_will {
            self.pending_will = Some(Box::new((0, will.restore()?)));
        }
        for (seq, delivery, state) in deliveries {
            self.next_seq = self.next_seq.max(seq + 1);
            match state {
                DeliveryState::Queued => {
                    self.set_queued_bytes(self.queued_bytes + delivery.message.payload.len());
                    self.queue.push_back(delivery);
                }
                DeliveryState::Sent(packet_id) => {
                    self.inflight.push_back(Inflight { packet_id, state: InflightState::Published(delivery) })
                }
                DeliveryState::Released(packet_id) => {
                    self.inflight.push_back(Inflight { packet_id, state: InflightState::Released(delivery) })
                }
            }
        }
        let highest = self.inflight.iter().map(|e| e.packet_id).max().unwrap_or(0);
        self.next_packet_id = highest.checked_add(1).unwrap_or(1);
        // Restored ids were not given in turn: count the free ones again.
        self.free_ids = 0;
        self.incoming_qos2.extend(inbound_qos2);
        Ok(())
    }
}

/// The MQTT 5 subscription options byte, the stored form of `SubOptions`.
fn options_byte(options: &SubOptions) -> u8 {
    options.qos as u8
        | u8::from(options.no_local) << 2
        | u8::from(options.retain_as_published) << 3
        | (options.retain_handling as u8) << 4
}

fn options_from_byte(byte: u8) -> Result<SubOptions, store::StoreError> {
    let corrupt = |_| store::StoreError::Corrupt(format!("subscription options {byte:#x}"));
    Ok(SubOptions {
        qos: QoS::from_u8(byte & 0x03).map_err(corrupt)?,
        no_local: byte & 0x04 != 0,
        retain_as_published: byte & 0x08 != 0,
        retain_handling: match (byte >> 4) & 0x03 {
            0 => cauldron_proto::RetainHandling::OnSubscribe,
            1 => cauldron_proto::RetainHandling::OnNewSubscribe,
            _ => cauldron_proto::RetainHandling::Never,
        },
    })
}

impl Drop for Session {
    /// A discarded session gives its queued bytes back to the broker-wide total.
    fn drop(&mut self) {
        self.set_queued_bytes(0);
    }
}
