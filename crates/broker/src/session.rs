//! A client's session, which outlives its connections [MQTT-4.1]: subscriptions, the queue of
//! messages waiting for it, the QoS 1/2 inflight window and QoS 2 receive state.
//!
//! `Session` is the protocol state machine with no I/O: it takes acks and deliveries and returns
//! the packets to send. `SessionHandle` shares it between publishers and the connection task
//! under a std `Mutex` held only for short, non-async sections.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use cauldron_proto::{Ack, ByteString, Packet, Protocol, QoS, SubOptions};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::authz::ClientInfo;
use crate::message::Message;

/// A message waiting in a session's queue, with what this subscriber's subscription decided.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub message: Arc<Message>,
    pub qos: QoS,
    pub retain: bool,
    pub subscription_ids: Vec<u32>,
    /// The `$share/...` filter this came through, so it can go to another member if this
    /// session cannot take it.
    pub shared: Option<ByteString>,
}

#[derive(Debug)]
enum InflightState {
    /// PUBLISH sent, waiting for PUBACK (QoS 1) or PUBREC (QoS 2).
    Published(Delivery),
    /// PUBREL sent, waiting for PUBCOMP.
    Released,
}

#[derive(Debug)]
struct Inflight {
    packet_id: u16,
    state: InflightState,
}

/// Limits that shape one session.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// QoS 1/2 messages sent but unacknowledged at once.
    pub max_inflight: usize,
    /// Messages waiting beyond the inflight window.
    pub max_queued: usize,
    /// Whether QoS 0 messages are queued while the client is offline.
    pub queue_qos0: bool,
}

/// The outcome of offering a message to a session.
#[derive(Debug, PartialEq, Eq)]
pub enum Enqueued {
    Queued,
    /// Queue full, or QoS 0 for an offline client: counted as dropped.
    Dropped,
}

/// Protocol state of one session, without I/O.
#[derive(Debug)]
pub struct Session {
    pub subscriptions: HashMap<ByteString, (SubOptions, Option<u32>)>,
    limits: Limits,
    /// The inflight window of the attached connection: our limit capped by its Receive Maximum.
    window: usize,
    /// Seconds the session outlives its connection: 0 ends it with the connection (3.x clean
    /// session 1), `u32::MAX` never expires (3.x clean session 0) [MQTT-3.1.2-23].
    pub expiry_interval: u32,
    /// When an offline session expires.
    pub expires_at: Option<Instant>,
    queue: VecDeque<Delivery>,
    inflight: VecDeque<Inflight>,
    next_packet_id: u16,
    /// QoS 2 packet ids received but not yet released: a repeat PUBLISH is not forwarded again.
    incoming_qos2: HashSet<u16>,
    /// The connection currently attached, if any; packets are only produced for it.
    connection: Option<u64>,
    pub protocol: Protocol,
    /// Largest packet the client accepts (MQTT 5 Maximum Packet Size).
    pub max_packet_size: usize,
    pub dropped: u64,
}

impl Session {
    pub fn new(limits: Limits) -> Session {
        Session {
            subscriptions: HashMap::new(),
            limits,
            window: limits.max_inflight,
            expiry_interval: 0,
            expires_at: None,
            queue: VecDeque::new(),
            inflight: VecDeque::new(),
            next_packet_id: 1,
            incoming_qos2: HashSet::new(),
            connection: None,
            protocol: Protocol::V3_1_1,
            max_packet_size: usize::MAX,
            dropped: 0,
        }
    }

    pub fn is_online(&self) -> bool {
        self.connection.is_some()
    }

    /// Whether the session outlives its connection.
    pub fn persistent(&self) -> bool {
        self.expiry_interval > 0
    }

    pub fn is_attached(&self, connection: u64) -> bool {
        self.connection == Some(connection)
    }

    /// Attaches a new connection and returns what must be resent to it: every unacknowledged
    /// PUBLISH with DUP set and every pending PUBREL, in their original order [MQTT-4.4.0-1].
    pub fn attach(
        &mut self,
        connection: u64,
        protocol: Protocol,
        receive_maximum: usize,
    ) -> Vec<Packet> {
        self.connection = Some(connection);
        self.expires_at = None;
        self.protocol = protocol;
        self.window = self.limits.max_inflight.min(receive_maximum).max(1);
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
                InflightState::Released => Packet::PubRel(Ack::new(entry.packet_id)),
            })
            .collect()
    }

    /// Detaches `connection` if it is still the attached one; returns whether it was. Starts the
    /// expiry clock of a persistent session.
    pub fn detach(&mut self, connection: u64, now: Instant) -> bool {
        if self.connection != Some(connection) {
            return false;
        }
        self.connection = None;
        if self.expiry_interval != u32::MAX {
            self.expires_at =
                Some(now + std::time::Duration::from_secs(u64::from(self.expiry_interval)));
        }
        // QoS 0 messages are not kept for an offline client unless configured.
        if !self.limits.queue_qos0 {
            self.queue.retain(|d| d.qos != QoS::AtMostOnce);
        }
        true
    }

    /// Takes back the messages that came through shared subscriptions and were not yet
    /// acknowledged, so another member of the group can have them (MQTT 5.0 section 4.8.2).
    /// Messages already released (PUBREL sent) stay: the subscriber has them.
    pub fn take_shared(&mut self) -> Vec<Delivery> {
        let mut taken = Vec::new();
        self.queue.retain(|d| {
            let shared = d.shared.is_some();
            if shared {
                taken.push(d.clone());
            }
            !shared
        });
        self.inflight.retain(|entry| match &entry.state {
            InflightState::Published(d) if d.shared.is_some() => {
                taken.push(d.clone());
                false
            }
            _ => true,
        });
        taken
    }

    pub fn is_expired(&self, now: Instant) -> bool {
        self.connection.is_none() && self.expires_at.is_some_and(|at| at <= now)
    }

    /// Offers a message. The queue is bounded; what does not fit is dropped and counted.
    pub fn enqueue(&mut self, delivery: Delivery) -> Enqueued {
        let offline_qos0 =
            !self.is_online() && delivery.qos == QoS::AtMostOnce && !self.limits.queue_qos0;
        if offline_qos0 || self.queue.len() >= self.limits.max_queued {
            self.dropped += 1;
            return Enqueued::Dropped;
        }
        self.queue.push_back(delivery);
        Enqueued::Queued
    }

    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    pub fn inflight(&self) -> usize {
        self.inflight.len()
    }

    /// Moves queued messages into PUBLISH packets for `connection`, as far as the inflight
    /// window allows (QoS 0 needs no window). Expired and oversized messages are dropped.
    /// Returns how many packets were produced and how many messages dropped.
    pub fn drain(&mut self, connection: u64, out: &mut Vec<Packet>, budget: usize) -> (usize, u64) {
        if self.connection != Some(connection) {
            return (0, 0);
        }
        let now = Instant::now();
        let mut dropped = 0;
        let mut produced = 0;
        while produced < budget {
            let Some(front) = self.queue.front() else {
                break;
            };
            if front.qos != QoS::AtMostOnce && self.inflight.len() >= self.window {
                break;
            }
            let delivery = self.queue.pop_front().expect("front exists");
            if delivery.message.is_expired(now) {
                dropped += 1;
                continue;
            }
            let packet_id = (delivery.qos != QoS::AtMostOnce).then(|| self.allocate_packet_id());
            let publish = delivery.message.to_publish(
                delivery.qos,
                delivery.retain,
                packet_id,
                now,
                &delivery.subscription_ids,
                self.protocol.is_v5(),
            );
            let publish = Packet::Publish(publish);
            // A message larger than the client's Maximum Packet Size is not sent [MQTT-3.1.2-25].
            if publish.encoded_len(self.protocol) > self.max_packet_size {
                dropped += 1;
                continue;
            }
            if let Some(packet_id) = packet_id {
                self.inflight.push_back(Inflight {
                    packet_id,
                    state: InflightState::Published(delivery),
                });
            }
            out.push(publish);
            produced += 1;
        }
        self.dropped += dropped;
        (produced, dropped)
    }

    fn allocate_packet_id(&mut self) -> u16 {
        loop {
            let id = self.next_packet_id;
            self.next_packet_id = self.next_packet_id.checked_add(1).unwrap_or(1);
            if !self.inflight.iter().any(|e| e.packet_id == id) {
                return id;
            }
        }
    }

    fn position(&self, packet_id: u16, released: bool) -> Option<usize> {
        self.inflight.iter().position(|e| {
            e.packet_id == packet_id && matches!(e.state, InflightState::Released) == released
        })
    }

    /// PUBACK for a QoS 1 delivery: it is complete. Unknown ids are ignored.
    pub fn on_puback(&mut self, packet_id: u16) -> bool {
        match self.position(packet_id, false) {
            Some(i) => {
                self.inflight.remove(i);
                true
            }
            None => false,
        }
    }

    /// PUBREC for a QoS 2 delivery: answer PUBREL and wait for PUBCOMP [MQTT-4.3.3-4]. A PUBREC
    /// with an error reason (MQTT 5) ends the flow instead.
    pub fn on_pubrec(&mut self, packet_id: u16, failed: bool) -> Option<Packet> {
        let i = self.position(packet_id, false);
        match i {
            Some(i) if failed => {
                self.inflight.remove(i);
                None
            }
            Some(i) => {
                self.inflight[i].state = InflightState::Released;
                Some(Packet::PubRel(Ack::new(packet_id)))
            }
            // Already released (a repeated PUBREC): PUBREL again.
            None if self.position(packet_id, true).is_some() => {
                Some(Packet::PubRel(Ack::new(packet_id)))
            }
            None => {
                let mut ack = Ack::new(packet_id);
                ack.reason = cauldron_proto::ReasonCode::PacketIdentifierNotFound;
                Some(Packet::PubRel(ack))
            }
        }
    }

    /// PUBCOMP: the QoS 2 delivery is complete.
    pub fn on_pubcomp(&mut self, packet_id: u16) -> bool {
        match self.position(packet_id, true) {
            Some(i) => {
                self.inflight.remove(i);
                true
            }
            None => false,
        }
    }

    /// An inbound QoS 2 PUBLISH: true if it is new and must be forwarded, false for a
    /// retransmission of one not yet released [MQTT-4.3.3-9].
    pub fn receive_qos2(&mut self, packet_id: u16) -> bool {
        self.incoming_qos2.insert(packet_id)
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
        self.incoming_qos2.remove(&packet_id)
    }
}

static CONNECTION_IDS: AtomicU64 = AtomicU64::new(1);

/// A fresh id for a connection attaching to a session.
pub fn next_connection_id() -> u64 {
    CONNECTION_IDS.fetch_add(1, Ordering::Relaxed)
}

/// A session shared between the router (publishers) and its connection task.
pub struct SessionHandle {
    pub client_id: ByteString,
    state: Mutex<Session>,
    /// Woken whenever a message is queued, so the connection task drains it.
    pub wake: Notify,
    /// Cancelled to close the attached connection (takeover, shutdown).
    kick: Mutex<Option<(u64, CancellationToken)>>,
    /// Mirrors whether a connection is attached, for the router to read without the lock.
    online: AtomicBool,
    /// A will waiting out its Will Delay Interval [MQTT-3.1.3-9].
    pending_will: Mutex<Option<(u64, Message)>>,
    /// The user name of the latest connection, for authorization of deliveries.
    username: Mutex<Option<ByteString>>,
}

impl SessionHandle {
    pub fn new(client_id: ByteString, limits: Limits) -> Arc<SessionHandle> {
        Arc::new(SessionHandle {
            client_id,
            state: Mutex::new(Session::new(limits)),
            wake: Notify::new(),
            kick: Mutex::new(None),
            online: AtomicBool::new(false),
            pending_will: Mutex::new(None),
            username: Mutex::new(None),
        })
    }

    #[cfg(test)]
    pub fn new_for_test(client_id: &str) -> Arc<SessionHandle> {
        SessionHandle::new(
            client_id.into(),
            Limits {
                max_inflight: 20,
                max_queued: 1000,
                queue_qos0: false,
            },
        )
    }

    /// Locks the state. Never held across an `.await`; a poisoned lock (a panic elsewhere while
    /// holding it) still yields the state, which every method leaves consistent.
    pub fn lock(&self) -> MutexGuard<'_, Session> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Offers a message and wakes the connection if it was queued.
    pub fn deliver(&self, delivery: Delivery) -> Enqueued {
        let result = self.lock().enqueue(delivery);
        if result == Enqueued::Queued {
            self.wake.notify_one();
        }
        result
    }

    /// Registers `connection` as the one to cancel on takeover, cancelling the previous one.
    pub fn set_connection(&self, connection: u64, token: CancellationToken) {
        let previous = self
            .kick
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .replace((connection, token));
        if let Some((_, old)) = previous {
            old.cancel();
        }
    }

    /// Cancels the attached connection, if any.
    pub fn kick(&self) {
        if let Some((_, token)) = self.kick.lock().unwrap_or_else(|e| e.into_inner()).take() {
            token.cancel();
        }
    }

    pub fn is_online(&self) -> bool {
        self.online.load(Ordering::Relaxed)
    }

    /// Who this session belongs to now.
    pub fn client_info(&self) -> ClientInfo {
        let username = self
            .username
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        ClientInfo {
            client_id: self.client_id.clone(),
            username,
        }
    }

    pub fn set_username(&self, username: Option<ByteString>) {
        *self.username.lock().unwrap_or_else(|e| e.into_inner()) = username;
    }

    pub fn set_online(&self, online: bool) {
        self.online.store(online, Ordering::Relaxed);
    }

    /// Parks a delayed will; it is published by whoever takes it first: the delay timer, the
    /// end of the session, or nobody if the client reconnects in time.
    /// The will is tagged with the connection it belongs to, so a timer of an earlier
    /// connection cannot take a later connection's will.
    pub fn set_pending_will(&self, connection: u64, will: Message) {
        *self.pending_will.lock().unwrap_or_else(|e| e.into_inner()) = Some((connection, will));
    }

    /// Takes the pending will, whichever connection left it.
    pub fn take_pending_will(&self) -> Option<Message> {
        self.pending_will
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .map(|(_, will)| will)
    }

    /// Takes the pending will only if `connection` left it (its delay timer fired).
    pub fn take_pending_will_of(&self, connection: u64) -> Option<Message> {
        let mut pending = self.pending_will.lock().unwrap_or_else(|e| e.into_inner());
        match pending.as_ref() {
            Some((owner, _)) if *owner == connection => pending.take().map(|(_, will)| will),
            _ => None,
        }
    }

    /// Forgets `connection`'s cancel token if it is still the registered one.
    pub fn clear_connection(&self, connection: u64) {
        let mut kick = self.kick.lock().unwrap_or_else(|e| e.into_inner());
        if kick.as_ref().is_some_and(|(id, _)| *id == connection) {
            *kick = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cauldron_proto::{Properties, Publish};

    fn limits() -> Limits {
        Limits {
            max_inflight: 2,
            max_queued: 3,
            queue_qos0: false,
        }
    }

    fn delivery(payload: &'static str, qos: QoS) -> Delivery {
        let mut publish = Publish::new("t", payload.as_bytes());
        publish.qos = qos;
        publish.properties = Properties::default();
        Delivery {
            message: Arc::new(Message::from_publish(publish, None)),
            qos,
            retain: false,
            subscription_ids: vec![],
            shared: None,
        }
    }

    fn ids(packets: &[Packet]) -> Vec<(Option<u16>, bool)> {
        packets
            .iter()
            .map(|p| match p {
                Packet::Publish(p) => (p.packet_id, p.dup),
                Packet::PubRel(a) => (Some(a.packet_id), false),
                other => panic!("unexpected {other:?}"),
            })
            .collect()
    }

    #[test]
    fn inflight_window_and_bounded_queue() {
        let mut s = Session::new(limits());
        s.attach(1, Protocol::V3_1_1, usize::MAX);
        for p in ["a", "b", "c"] {
            assert_eq!(s.enqueue(delivery(p, QoS::AtLeastOnce)), Enqueued::Queued);
        }
        assert_eq!(
            s.enqueue(delivery("d", QoS::AtLeastOnce)),
            Enqueued::Dropped
        );
        let mut out = vec![];
        s.drain(1, &mut out, usize::MAX);
        assert_eq!(
            ids(&out),
            [(Some(1), false), (Some(2), false)],
            "window of 2"
        );
        assert!(s.on_puback(1));
        assert!(!s.on_puback(1), "second ack of the same id is ignored");
        out.clear();
        s.drain(1, &mut out, usize::MAX);
        assert_eq!(ids(&out), [(Some(3), false)]);
        assert_eq!(s.dropped, 1);
    }

    #[test]
    fn reconnect_resends_with_dup_in_order_and_pubrel_for_released() {
        let mut s = Session::new(limits());
        s.attach(1, Protocol::V3_1_1, usize::MAX);
        s.enqueue(delivery("a", QoS::ExactlyOnce));
        s.enqueue(delivery("b", QoS::AtLeastOnce));
        let mut out = vec![];
        s.drain(1, &mut out, usize::MAX);
        assert_eq!(s.on_pubrec(1, false), Some(Packet::PubRel(Ack::new(1))));
        assert!(s.detach(1, Instant::now()));
        // A packet from the old connection after detaching produces nothing.
        assert_eq!(s.drain(1, &mut out, usize::MAX), (0, 0));
        let resent = s.attach(2, Protocol::V3_1_1, usize::MAX);
        assert_eq!(ids(&resent), [(Some(1), false), (Some(2), true)]);
        assert!(matches!(resent[0], Packet::PubRel(_)));
        assert!(s.on_pubcomp(1));
        assert!(s.on_puback(2));
        assert_eq!(s.inflight(), 0);
    }

    #[test]
    fn offline_session_keeps_qos1_and_drops_qos0() {
        let mut s = Session::new(limits());
        assert_eq!(
            s.enqueue(delivery("zero", QoS::AtMostOnce)),
            Enqueued::Dropped
        );
        assert_eq!(
            s.enqueue(delivery("one", QoS::AtLeastOnce)),
            Enqueued::Queued
        );
        s.attach(7, Protocol::V3_1_1, usize::MAX);
        let mut out = vec![];
        s.drain(7, &mut out, usize::MAX);
        assert_eq!(ids(&out), [(Some(1), false)]);
    }

    #[test]
    fn qos2_receive_deduplicates_until_release() {
        let mut s = Session::new(limits());
        assert!(s.receive_qos2(5));
        assert!(!s.receive_qos2(5), "retransmission is not forwarded again");
        assert!(s.release_qos2(5));
        assert!(!s.release_qos2(5));
        assert!(s.receive_qos2(5), "a released id starts a new message");
    }

    #[test]
    fn receive_maximum_caps_the_window() {
        let mut s = Session::new(limits());
        s.attach(1, Protocol::V5, 1);
        s.enqueue(delivery("a", QoS::AtLeastOnce));
        s.enqueue(delivery("b", QoS::AtLeastOnce));
        let mut out = vec![];
        s.drain(1, &mut out, usize::MAX);
        assert_eq!(out.len(), 1);
    }
}
