//! What the connection does with each packet the client sends after CONNECT.

use cauldron_proto::{
    Ack, Auth, ByteString, Disconnect, Packet, PacketType, Properties, Publish, QoS, ReasonCode, SubAck,
    Subscribe, Subscription, UnsubAck, Unsubscribe,
};

use crate::auth;
use crate::message::Message;
use crate::metrics::{self, DropReason};

use super::{Connection, Exit, Violation};

/// Most messages routed together (see `Connection::publishes`): enough that a fan-out takes
/// each subscriber's lock once for many, few enough that the first is not held back long.
const PUBLISH_BATCH: usize = 64;

/// PUBACKs and PUBCOMPs read together (see `cauldron_proto::peek_short_ack`), completed under
/// one session lock: a fan-out's subscriber sends one for every message, and a lock each moved
/// the session's cache line between the publisher's core and the subscriber's every time.
pub(super) struct Completions {
    acks: [(PacketType, u16); Completions::MAX],
    len: usize,
}

impl Completions {
    const MAX: usize = 32;

    pub(super) fn new() -> Completions {
        Completions { acks: [(PacketType::PubAck, 0); Completions::MAX], len: 0 }
    }

    /// Adds an ack; true when full, to be completed before the next.
    pub(super) fn push(&mut self, kind: PacketType, packet_id: u16) -> bool {
        self.acks[self.len] = (kind, packet_id);
        self.len += 1;
        self.len == Completions::MAX
    }
}

impl Connection {
    /// Completes the deliveries `acks` acknowledged, in the order they came; unknown ids are
    /// ignored, as `handle` ignores them.
    pub(super) fn complete(&mut self, acks: &mut Completions) {
        if acks.len == 0 {
            return;
        }
        let taken = &acks.acks[..std::mem::take(&mut acks.len)];
        self.session.edit(|s| {
            for &(kind, packet_id) in taken {
                match kind {
                    PacketType::PubAck => s.on_puback(packet_id),
                    _ => s.on_pubcomp(packet_id),
                };
            }
        });
        // Its inflight window has room again for queued messages.
        self.window_opened = true;
    }

    pub(super) fn handle(&mut self, packet: Packet) -> Result<Option<Exit>, Violation> {
        if !matches!(&packet, Packet::Publish(p) if p.qos != QoS::ExactlyOnce) {
            // Whatever else the client sent comes after what it published before.
            self.route_publishes();
        }
        match packet {
            Packet::Publish(publish) => self.on_publish(publish)?,
            Packet::PubAck(ack) => {
                self.session.edit(|s| s.on_puback(ack.packet_id));
            }
            Packet::PubRec(ack) => {
                let (reply, ticket) =
                    self.session.edit(|s| s.on_pubrec(ack.packet_id, ack.reason.is_error()));
                // The released state is stored before PUBREL goes out: after a restart the
                // broker must repeat PUBREL, never the PUBLISH the client already passed on.
                self.hold_until(ticket);
                if let Some(reply) = reply {
                    self.send(&reply);
                }
            }
            Packet::PubComp(ack) => {
                self.session.edit(|s| s.on_pubcomp(ack.packet_id));
            }
            Packet::PubRel(ack) => {
                let (known, ticket) = self.session.edit(|s| s.release_qos2(ack.packet_id));
                if let Some(extras) = &mut self.extras {
                    extras.qos2_resent.retain(|id| *id != ack.packet_id);
                }
                // The id is free for a new message only once its release is stored.
                self.hold_until(ticket);
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
                return Err(Violation::new(ReasonCode::ProtocolError, "[MQTT-3.1.0-2] second CONNECT"));
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
                publish.topic =
                    self.extras.as_ref().and_then(|e| e.aliases.inbound.get(&alias)).cloned().ok_or_else(
                        || {
                            Violation::new(
                                ReasonCode::ProtocolError,
                                "[MQTT-3.3.2-12] topic alias not set on this connection",
                            )
                        },
                    )?;
            } else {
                self.extras().aliases.inbound.insert(alias, publish.topic.clone());
            }
        }
        if let Some(mount) = self.mount() {
            publish.topic = mounted(mount, &publish.topic);
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
        let traffic = self.broker.metrics.traffic();
        metrics::add(&traffic.messages_received, 1);
        metrics::add(&traffic.publish_received[publish.qos as usize], 1);
        let (qos, packet_id) = (publish.qos, publish.packet_id.unwrap_or(0));
        let limit = config.message_size_limit;
        let refused = if limit > 0 && publish.payload.len() > limit {
            self.broker.metrics.dropped_for(DropReason::TooLarge, 1);
            // Not 0x95 as Mosquitto sends: PUBACK and PUBREC may not carry it (MQTT 5.0
            // 3.4.2.1, 3.5.2.1); 0x83 is "valid, but not accepted".
            Some(ReasonCode::ImplementationSpecificError)
        } else if !self.may_publish(&publish.topic) {
            self.broker.metrics.dropped_for(DropReason::NotAuthorized, 1);
            Some(ReasonCode::NotAuthorized)
        } else {
            None
        };
        let mut message = Message::from_publish(publish, Some(self.session.client_id.clone()));
        if message.retain {
            // Kept with the message for `check_retain_source`; only a retained one needs it.
            message.publisher_user = self.session.client_info().username;
        }
        if qos == QoS::AtLeastOnce {
            // The PUBACKs of the messages waiting to be routed are not sent yet either.
            self.check_receive_maximum(self.publishes.iter().filter(|(_, id)| id.is_some()).count())?;
        }
        match (qos, refused) {
            (QoS::AtMostOnce, None) => self.publishes.push((message, None)),
            (QoS::AtLeastOnce, None) => self.publishes.push((message, Some(packet_id))),
            // Refused messages are dropped; the QoS flow still completes [MQTT-3.3.5-2].
            (QoS::AtMostOnce, Some(_)) => {}
            (QoS::AtLeastOnce, Some(code)) => {
                self.route_publishes();
                self.send(&Packet::PubAck(self.ack(packet_id, Err(code))));
            }
            (QoS::ExactlyOnce, _) => self.on_publish_qos2(message, packet_id, refused)?,
        }
        if self.publishes.len() >= PUBLISH_BATCH {
            self.route_publishes();
        }
        Ok(())
    }

    /// Routes the messages `on_publish` accepted, together, and answers them in order.
    pub(super) fn route_publishes(&mut self) {
        let publishes = std::mem::take(&mut self.publishes);
        if publishes.is_empty() {
            return;
        }
        let (messages, ids): (Vec<Message>, Vec<Option<u16>>) = publishes.into_iter().unzip();
        let routed = self.broker.publish_all(messages);
        for (routed, packet_id) in routed.into_iter().zip(ids) {
            let accepted = routed.accepted();
            // A full tap slows this publisher down instead of losing the message.
            self.hold_until(routed.observed);
            self.pause_for(routed.congested);
            if let Some(packet_id) = packet_id {
                // Acked means durable: PUBACK waits for the commit that stores the message.
                self.hold_until(routed.durable);
                self.send(&Packet::PubAck(self.ack(packet_id, Ok(accepted))));
            }
        }
    }

    fn on_publish_qos2(
        &mut self,
        message: Message,
        packet_id: u16,
        refused: Option<ReasonCode>,
    ) -> Result<(), Violation> {
        if let Some(code) = refused {
            // A refusal ends the exchange at PUBREC [MQTT-4.3.3]: nothing to remember,
            // and a 3.x client's PUBREL for it is answered all the same.
            self.send(&Packet::PubRec(self.ack(packet_id, Err(code))));
            return Ok(());
        }
        let (known, pending) = self.session.read(|s| (s.knows_qos2(packet_id), s.pending_qos2()));
        if !known {
            self.check_receive_maximum(pending)?;
        } else if self.protocol.is_v5() {
            // MQTT 5 resends only on a new connection [MQTT-4.4.0-1]. One resend on the
            // same connection is let pass, as Mosquitto does; a second is a flood.
            let resent = &mut self.extras().qos2_resent;
            if resent.contains(&packet_id) {
                return Err(Violation::new(
                    ReasonCode::ProtocolError,
                    "[MQTT-4.4.0-1] QoS 2 PUBLISH resent on the same connection",
                ));
            }
            resent.push(packet_id);
        }
        // Forward once per packet id until PUBREL (method B of [MQTT-4.3.3]).
        let (is_new, ticket) = self.session.edit(|s| s.receive_qos2(packet_id));
        self.hold_until(ticket);
        let matched = match is_new {
            true => {
                let routed = self.broker.publish(message);
                let accepted = routed.accepted();
                self.hold_until(routed.durable);
                self.hold_until(routed.observed);
                self.pause_for(routed.congested);
                accepted
            }
            false => Ok(1),
        };
        // PUBREC does not tell "no matching subscribers" (the spec leaves it open):
        // Mosquitto, which routes at PUBREL, never does, and clients compare bytes.
        let matched = matched.map(|n| n.max(1));
        self.send(&Packet::PubRec(self.ack(packet_id, Ok(matched))));
        Ok(())
    }

    /// An MQTT 5 client may have at most our Receive Maximum QoS 1/2 PUBLISHes unacknowledged:
    /// PUBACKs still held for their commit, and QoS 2 ids not yet released (`qos2_pending`).
    /// One more is answered with DISCONNECT 0x93 [MQTT-3.3.4-9]. 3.x clients cannot be told a
    /// maximum, so none is enforced on them.
    fn check_receive_maximum(&self, qos2_pending: usize) -> Result<(), Violation> {
        let maximum = usize::from(self.broker.config.receive_maximum());
        if self.protocol.is_v5() && self.held_acks as usize + qos2_pending >= maximum {
            return Err(Violation::new(
                ReasonCode::ReceiveMaximumExceeded,
                "[MQTT-3.3.4-9] more unacknowledged QoS 1/2 PUBLISHes than the Receive Maximum",
            ));
        }
        Ok(())
    }

    pub(super) fn may_publish(&self, topic: &str) -> bool {
        if reserved_for_the_broker(topic) {
            return false;
        }
        let authorizer = self.authorizer();
        authorizer.allows_everything() || authorizer.can_publish(&self.session.client_info(), topic)
    }

    /// PUBACK/PUBREC for a message routed to `matched` sessions (`Err(code)`: refused before
    /// routing, `Ok(Err(()))`: refused everywhere for the memory ceiling). MQTT 5 says why;
    /// 3.1.1 has no way to, so there a refused publish looks accepted.
    fn ack(&self, packet_id: u16, matched: Result<Result<usize, ()>, ReasonCode>) -> Ack {
        let mut ack = Ack::new(packet_id);
        if self.protocol.is_v5() {
            ack.reason = match matched {
                Err(code) => code,
                Ok(Err(())) => ReasonCode::QuotaExceeded,
                // In a cluster, subscribers on other nodes are not counted here.
                Ok(Ok(0)) if !self.broker.is_clustered() => ReasonCode::NoMatchingSubscribers,
                Ok(Ok(_)) => ReasonCode::Success,
            };
        }
        ack
    }

    fn on_subscribe(&mut self, mut subscribe: Subscribe) -> Result<(), Violation> {
        if let Some(mount) = self.mount() {
            for sub in &mut subscribe.filters {
                sub.filter = mounted_filter(mount, &sub.filter);
            }
        }
        let subscription_id = subscribe.properties.subscription_identifiers.first().copied();
        let mut codes = Vec::with_capacity(subscribe.filters.len());
        let mut retained = Vec::new();
        let broker = std::sync::Arc::clone(&self.broker);
        let config = &broker.config;
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
            } else if !self.authorizer().allows_everything()
                && !self.authorizer().can_subscribe(&self.session.client_info(), &sub.filter)
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
            // A 3.x bridge gets what MQTT 5 bridges ask for: its own messages not echoed, and
            // retain flags as published, as Mosquitto treats one.
            let bridged;
            let sub = match self.bridge {
                true => {
                    let mut options = sub.options;
                    (options.no_local, options.retain_as_published) = (true, true);
                    bridged = Subscription { filter: sub.filter.clone(), options };
                    &bridged
                }
                false => sub,
            };
            let (code, messages, stored) = self.broker.subscribe(&self.session, sub, subscription_id);
            // A persistent session's subscriptions are stored before SUBACK confirms them.
            self.hold_until(stored);
            codes.push(code);
            retained.extend(messages);
            if let (true, Some(directory)) = (shared, self.broker.directory()) {
                // A cluster's share group is read by every node with a member.
                let ticket = std::sync::Arc::clone(directory).join_group(&sub.filter);
                self.hold_until(ticket);
            }
        }
        self.hold_for_registry();
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

    fn on_unsubscribe(&mut self, mut unsubscribe: Unsubscribe) {
        if let Some(mount) = self.mount() {
            for filter in &mut unsubscribe.filters {
                *filter = mounted_filter(mount, filter);
            }
        }
        let codes = unsubscribe
            .filters
            .iter()
            .map(|filter| {
                let (existed, stored) = self.broker.unsubscribe(&self.session, filter);
                self.hold_until(stored);
                match existed {
                    true => ReasonCode::Success,
                    false => ReasonCode::NoSubscriptionExisted,
                }
            })
            .collect();
        self.hold_for_registry();
        self.send(&Packet::UnsubAck(UnsubAck {
            packet_id: unsubscribe.packet_id,
            codes,
            properties: Properties::default(),
        }));
    }

    /// In a cluster, holds what follows until the session's changed record is in the session
    /// registry too.
    fn hold_for_registry(&mut self) {
        if let Some(directory) = self.broker.directory() {
            let ticket = std::sync::Arc::clone(directory).checkpoint(&self.session, self.id);
            self.hold_until(ticket);
        }
    }

    /// Re-authentication on a live connection [MQTT-4.12.1]: AUTH 0x19 starts it, AUTH 0x18
    /// carries the proof, and AUTH 0x00 ends it. A failure closes the connection (0x87).
    fn on_auth(&mut self, auth: Auth) -> Result<(), Violation> {
        let method = auth.properties.authentication_method.as_ref();
        let own = self.extras.as_ref().and_then(|e| e.auth_method.as_ref());
        if own.is_none() || method != own {
            return Err(Violation::new(
                ReasonCode::ProtocolError,
                "[MQTT-4.12.1-1] AUTH with another method than CONNECT's",
            ));
        }
        let under_way = self.extras.as_mut().and_then(|e| e.reauth.take());
        let step = match (auth.reason, under_way) {
            (ReasonCode::ReAuthenticate, None) => auth::begin(
                &self.broker.config,
                method.map(|m| &m[..]).unwrap_or_default(),
                auth.properties.authentication_data.as_ref(),
            )
            .map(|(exchange, challenge)| {
                self.extras().reauth = Some(Box::new(exchange));
                challenge
            }),
            (ReasonCode::ContinueAuthentication, Some(exchange)) => auth::complete(*exchange, &auth)
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
                let reason = if code == ReasonCode::ProtocolError { code } else { ReasonCode::NotAuthorized };
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
            self.session.edit(|s| s.set_expiry_interval(expiry));
        }
        Ok(Exit::Disconnect { send_will: disconnect.reason == ReasonCode::DisconnectWithWill })
    }
}

/// A topic under a listener's mount point.
pub(super) fn mounted(mount: &str, topic: &str) -> ByteString {
    ByteString::from(format!("{mount}{topic}"))
}

/// A filter under a mount point; for `$share/<group>/<filter>` the filter part.
fn mounted_filter(mount: &str, filter: &str) -> ByteString {
    match cauldron_proto::topic::parse_shared(filter) {
        Some(Ok((group, inner))) => ByteString::from(format!("$share/{group}/{mount}{inner}")),
        _ => mounted(mount, filter),
    }
}

/// Topics no client may publish to, whatever the ACL says, as in Mosquitto: the broker's own
/// `$SYS` tree (a client could otherwise forge its statistics), except the connection state a
/// bridge reports as `$SYS/broker/connection/<name>/state`; and `$share/...`, which names
/// shared subscriptions, not topics.
fn reserved_for_the_broker(topic: &str) -> bool {
    if let Some(rest) = topic.strip_prefix("$SYS/") {
        let bridge_state = rest
            .strip_prefix("broker/connection/")
            .and_then(|name| name.strip_suffix("/state"))
            .is_some_and(|name| !name.is_empty() && !name.contains('/'));
        return !bridge_state;
    }
    topic == "$SYS" || topic.starts_with("$share/") || topic == "$share"
}

#[cfg(test)]
mod tests {
    use super::reserved_for_the_broker;

    #[test]
    fn sys_and_share_are_the_brokers() {
        for reserved in [
            "$SYS",
            "$SYS/broker/uptime",
            "$SYS/broker/connection/me",
            "$share/g/t",
            "$SYS/broker/connection/a/b/state",
        ] {
            assert!(reserved_for_the_broker(reserved), "{reserved}");
        }
        for free in ["$SYS/broker/connection/me/state", "sys/x", "$SYSTEM/x", "$shared/x", "a/$SYS"] {
            assert!(!reserved_for_the_broker(free), "{free}");
        }
    }
}
