//! Protocol state of the client's connection task: packet ids, the QoS flows in both
//! directions, and what to send again after a reconnect.

use std::collections::HashMap;

use bytes::BytesMut;
use cauldron_proto::{
    decode, Ack, ByteString, Packet, Properties, Protocol, Publish, QoS, ReasonCode, Subscribe, Subscription,
    Unsubscribe,
};
use tokio::sync::{mpsc, oneshot};

use crate::handshake::MAX_PACKET;
use crate::{Command, Error};

type Reply<T> = oneshot::Sender<Result<T, Error>>;

/// A message on its way to the application, with what acknowledging it takes (QoS 1/2).
pub(crate) type Incoming = (Publish, Option<Taken>);

/// Word that the application took a QoS 1/2 message, so the task acknowledges it.
pub(crate) struct Taken {
    epoch: u64,
    qos: QoS,
    packet_id: u16,
}

/// A request waiting for its acknowledgement, kept with its packet to send again after a
/// reconnect. `reply` is `None` for requests the task makes itself (restoring subscriptions).
struct Pending<T> {
    seq: u64,
    packet: Packet,
    reply: Option<Reply<T>>,
}

impl<T> Pending<T> {
    fn answer(self, result: Result<T, Error>) {
        if let Some(reply) = self.reply {
            let _ = reply.send(result);
        }
    }
}

pub(crate) struct State {
    protocol: Protocol,
    pub rbuf: BytesMut,
    pub wbuf: BytesMut,
    next_packet_id: u16,
    next_seq: u64,
    /// Outgoing QoS 1/2 publishes; `true` once PUBREL was sent (QoS 2, waiting for PUBCOMP).
    publishes: HashMap<u16, (Pending<Option<ReasonCode>>, bool)>,
    subscribes: HashMap<u16, Pending<Vec<ReasonCode>>>,
    unsubscribes: HashMap<u16, Pending<Vec<ReasonCode>>>,
    /// Incoming QoS 2 ids handed on but not yet released; `true` once taken (PUBREC sent).
    incoming_qos2: HashMap<u16, bool>,
    /// Counts the sessions the server started afresh: an acknowledgement for a message of an
    /// earlier one would name a packet id that may now mean another message.
    epoch: u64,
    /// Granted subscriptions, to restore when a reconnect finds no session on the server.
    subscriptions: HashMap<ByteString, Subscription>,
}

impl State {
    pub fn new(protocol: Protocol) -> State {
        State {
            protocol,
            rbuf: BytesMut::with_capacity(4096),
            wbuf: BytesMut::new(),
            next_packet_id: 1,
            next_seq: 0,
            publishes: HashMap::new(),
            subscribes: HashMap::new(),
            unsubscribes: HashMap::new(),
            incoming_qos2: HashMap::new(),
            epoch: 0,
            subscriptions: HashMap::new(),
        }
    }

    pub fn send(&mut self, packet: &Packet) -> Result<(), Error> {
        trace_packet("sending", packet);
        packet.encode(self.protocol, &mut self.wbuf).map_err(Error::from)
    }

    fn is_busy(&self, id: u16) -> bool {
        self.publishes.contains_key(&id)
            || self.subscribes.contains_key(&id)
            || self.unsubscribes.contains_key(&id)
    }

    fn packet_id(&mut self) -> u16 {
        loop {
            let id = self.next_packet_id;
            self.next_packet_id = id.checked_add(1).unwrap_or(1);
            if !self.is_busy(id) {
                return id;
            }
        }
    }

    fn pending<T>(&mut self, packet: Packet, reply: Option<Reply<T>>) -> Pending<T> {
        self.next_seq += 1;
        Pending { seq: self.next_seq, packet, reply }
    }

    /// Encodes `packet` and remembers it as pending, or answers the error at once.
    fn track<T>(&mut self, packet: Packet, reply: Option<Reply<T>>) -> Option<Pending<T>> {
        match self.send(&packet) {
            Ok(()) => Some(self.pending(packet, reply)),
            Err(e) => {
                if let Some(reply) = reply {
                    let _ = reply.send(Err(e));
                }
                None
            }
        }
    }

    pub fn command(&mut self, command: Command) {
        match command {
            Command::Publish(mut publish, chosen, reply) => {
                if publish.qos == QoS::AtMostOnce {
                    publish.packet_id = None;
                    let _ = reply.send(self.send(&Packet::Publish(publish)).map(|_| None));
                    return;
                }
                let id = match publish.packet_id.filter(|_| chosen) {
                    Some(id) if id == 0 || self.is_busy(id) => {
                        let _ = reply.send(Err(Error::Rejected(ReasonCode::PacketIdentifierInUse)));
                        return;
                    }
                    Some(id) => id,
                    None => self.packet_id(),
                };
                publish.packet_id = Some(id);
                if let Some(pending) = self.track(Packet::Publish(publish), Some(reply)) {
                    self.publishes.insert(id, (pending, false));
                }
            }
            Command::Subscribe(filters, properties, chosen, reply) => match chosen {
                Some(id) if id == 0 || self.is_busy(id) => {
                    let _ = reply.send(Err(Error::Rejected(ReasonCode::PacketIdentifierInUse)));
                }
                _ => self.subscribe(filters, properties, chosen, Some(reply)),
            },
            Command::Unsubscribe(filters, chosen, reply) => {
                if chosen.is_some_and(|id| id == 0 || self.is_busy(id)) {
                    let _ = reply.send(Err(Error::Rejected(ReasonCode::PacketIdentifierInUse)));
                    return;
                }
                let packet_id = chosen.unwrap_or_else(|| self.packet_id());
                let unsubscribe = Unsubscribe { packet_id, filters, properties: Properties::default() };
                if let Some(pending) = self.track(Packet::Unsubscribe(unsubscribe), Some(reply)) {
                    self.unsubscribes.insert(packet_id, pending);
                }
            }
            Command::Raw(packet) => {
                let _ = self.send(&packet);
            }
            // The task loop handles DISCONNECT itself, as it ends the connection.
            Command::Disconnect(_, reply) => {
                let _ = reply.send(Err(Error::Closed));
            }
        }
    }

    fn subscribe(
        &mut self,
        filters: Vec<Subscription>,
        properties: Properties,
        chosen: Option<u16>,
        reply: Option<Reply<Vec<ReasonCode>>>,
    ) {
        let packet_id = chosen.unwrap_or_else(|| self.packet_id());
        if let Some(pending) =
            self.track(Packet::Subscribe(Subscribe { packet_id, filters, properties }), reply)
        {
            self.subscribes.insert(packet_id, pending);
        }
    }

    /// After a reconnect: restore subscriptions if the server kept no session, then send again
    /// every unacknowledged PUBLISH (with DUP), PUBREL, SUBSCRIBE and UNSUBSCRIBE, oldest first.
    pub fn resume(&mut self, session_present: bool) {
        self.rbuf.clear();
        self.wbuf.clear();
        if !session_present {
            // The server kept nothing: its packet ids start anew.
            self.incoming_qos2.clear();
            self.epoch += 1;
        }
        let mut again: Vec<(u64, Packet)> = Vec::new();
        for (id, (pending, released)) in &self.publishes {
            let packet = match (&pending.packet, released) {
                (_, true) => Packet::PubRel(Ack::new(*id)),
                (Packet::Publish(publish), false) => {
                    Packet::Publish(Publish { dup: true, ..publish.clone() })
                }
                (other, _) => other.clone(),
            };
            again.push((pending.seq, packet));
        }
        again.extend(self.subscribes.values().map(|p| (p.seq, p.packet.clone())));
        again.extend(self.unsubscribes.values().map(|p| (p.seq, p.packet.clone())));
        again.sort_by_key(|(seq, _)| *seq);
        if !session_present && !self.subscriptions.is_empty() {
            let filters: Vec<Subscription> = self.subscriptions.values().cloned().collect();
            self.subscribe(filters, Properties::default(), None, None);
        }
        for (_, packet) in again {
            let _ = self.send(&packet);
        }
    }

    /// Fails every pending request (the connection is gone for good).
    pub fn fail_all(&mut self) {
        self.publishes.drain().for_each(|(_, (p, _))| p.answer(Err(Error::Closed)));
        self.subscribes.drain().for_each(|(_, p)| p.answer(Err(Error::Closed)));
        self.unsubscribes.drain().for_each(|(_, p)| p.answer(Err(Error::Closed)));
    }

    /// Handles every complete packet read; false ends the connection.
    pub async fn process(&mut self, messages: &mpsc::Sender<Incoming>) -> bool {
        loop {
            let packet = match decode(&mut self.rbuf, self.protocol, MAX_PACKET) {
                Ok(Some(packet)) => {
                    trace_packet("received", &packet);
                    packet
                }
                Ok(None) => return true,
                Err(_) => return false,
            };
            match packet {
                Packet::Publish(publish) => {
                    let taken = |qos, packet_id| Some(Taken { epoch: self.epoch, qos, packet_id });
                    let ack = match (publish.qos, publish.packet_id) {
                        (QoS::AtLeastOnce, Some(id)) => taken(QoS::AtLeastOnce, id),
                        (QoS::ExactlyOnce, Some(id)) => match self.incoming_qos2.get(&id) {
                            None => {
                                self.incoming_qos2.insert(id, false);
                                taken(QoS::ExactlyOnce, id)
                            }
                            // Sent again (DUP) before our PUBREC reached the server: not a
                            // second message [MQTT-4.3.3-9]; the PUBREC goes out once taken.
                            Some(false) => continue,
                            Some(true) => {
                                let _ = self.send(&Packet::PubRec(Ack::new(id)));
                                continue;
                            }
                        },
                        _ => None,
                    };
                    // A full channel means the application is slow: wait for it (backpressure).
                    // A dropped `Messages` takes nothing, so nothing is acknowledged.
                    let _ = messages.send((publish, ack)).await;
                }
                Packet::PubRel(ack) => {
                    let known = self.incoming_qos2.remove(&ack.packet_id).is_some();
                    let _ = self.send(&Packet::PubComp(self.answer(ack.packet_id, known)));
                }
                Packet::PubAck(ack) => self.complete(ack.packet_id, ack.reason),
                Packet::PubRec(ack) => {
                    if ack.reason.is_error() {
                        self.complete(ack.packet_id, ack.reason);
                    } else if let Some((_, released)) = self.publishes.get_mut(&ack.packet_id) {
                        *released = true;
                        let _ = self.send(&Packet::PubRel(Ack::new(ack.packet_id)));
                    } else {
                        // Unknown (a flow an earlier connection finished): released all the
                        // same, so the server can end it.
                        let _ = self.send(&Packet::PubRel(self.answer(ack.packet_id, false)));
                    }
                }
                Packet::PubComp(ack) => self.complete(ack.packet_id, ack.reason),
                Packet::SubAck(ack) => {
                    if let Some(pending) = self.subscribes.remove(&ack.packet_id) {
                        if let Packet::Subscribe(subscribe) = &pending.packet {
                            for (sub, code) in subscribe.filters.iter().zip(&ack.codes) {
                                if !code.is_error() {
                                    self.subscriptions.insert(sub.filter.clone(), sub.clone());
                                }
                            }
                        }
                        pending.answer(Ok(ack.codes));
                    }
                }
                Packet::UnsubAck(ack) => {
                    if let Some(pending) = self.unsubscribes.remove(&ack.packet_id) {
                        if let Packet::Unsubscribe(unsubscribe) = &pending.packet {
                            for filter in &unsubscribe.filters {
                                self.subscriptions.remove(filter);
                            }
                        }
                        pending.answer(Ok(ack.codes));
                    }
                }
                Packet::Disconnect(_) => return false,
                // Not a packet servers send, but a broker that takes a bridge for a peer may
                // (Mosquitto's tests do): an answer tells it the link is alive.
                Packet::PingReq => {
                    let _ = self.send(&Packet::PingResp);
                }
                _ => {}
            }
        }
    }

    /// The application took a message: PUBACK or PUBREC it, unless it came in a session the
    /// server has since dropped. Taking keeps arrival order, so acknowledgements do too
    /// [MQTT-4.6.0-2].
    pub fn taken(&mut self, taken: Taken) {
        if taken.epoch != self.epoch {
            return;
        }
        let id = taken.packet_id;
        match taken.qos {
            QoS::AtLeastOnce => {
                let _ = self.send(&Packet::PubAck(Ack::new(id)));
            }
            _ => {
                if let Some(taken @ false) = self.incoming_qos2.get_mut(&id) {
                    *taken = true;
                    let _ = self.send(&Packet::PubRec(Ack::new(id)));
                }
            }
        }
    }

    /// The PUBREL or PUBCOMP for `packet_id`: at MQTT 5, one for an id this client does not
    /// know says so (0x92, "not an error during recovery", MQTT 5.0 section 3.6.2.1).
    fn answer(&self, packet_id: u16, known: bool) -> Ack {
        let mut ack = Ack::new(packet_id);
        if !known && self.protocol.is_v5() {
            ack.reason = ReasonCode::PacketIdentifierNotFound;
        }
        ack
    }

    fn complete(&mut self, packet_id: u16, reason: ReasonCode) {
        if let Some((pending, _)) = self.publishes.remove(&packet_id) {
            pending.answer(Ok(Some(reason)));
        }
    }
}

/// Each packet in and out at debug level under the target `cauldron_client::packets`
/// (`cauldron pub -d` / `cauldron sub -d` turn it on), PUBLISH in mosquitto_pub's shape.
pub(crate) fn trace_packet(direction: &str, packet: &Packet) {
    if !tracing::enabled!(target: "cauldron_client::packets", tracing::Level::DEBUG) {
        return;
    }
    match packet {
        Packet::Publish(p) => tracing::debug!(
            target: "cauldron_client::packets",
            "{direction} PUBLISH (d{}, q{}, r{}, m{}, '{}', ... ({} bytes))",
            u8::from(p.dup),
            p.qos as u8,
            u8::from(p.retain),
            p.packet_id.unwrap_or(0),
            p.topic,
            p.payload.len()
        ),
        other => {
            let name = format!("{:?}", other.packet_type()).to_uppercase();
            tracing::debug!(target: "cauldron_client::packets", "{direction} {name}")
        }
    }
}
