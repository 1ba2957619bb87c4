//! An application message as the broker holds it: shared by `Arc` between the retained store and
//! every subscriber's queue, so the payload is never copied per subscriber.

use std::time::Instant;

use cauldron_proto::{ByteString, Bytes, Properties, Publish, QoS};

/// Payloads up to the connection's largest read buffer are copied out of it.
const OWN_COPY_MAX: usize = 64 * 1024;

#[derive(Debug)]
pub struct Message {
    pub topic: ByteString,
    pub payload: Bytes,
    pub qos: QoS,
    pub retain: bool,
    /// MQTT 5 properties forwarded to subscribers (never the topic alias or subscription ids).
    pub properties: Properties,
    /// Client id of the publisher, for the no-local subscription option.
    pub publisher: Option<ByteString>,
    /// When the message expiry interval runs out.
    pub expires_at: Option<Instant>,
}

impl Message {
    /// Takes an inbound PUBLISH (topic alias already resolved) as a broker message.
    pub fn from_publish(publish: Publish, publisher: Option<ByteString>) -> Message {
        let mut properties = publish.properties;
        properties.topic_alias = None;
        properties.subscription_identifiers.clear();
        let expires_at = properties
            .message_expiry_interval
            .map(|secs| Instant::now() + std::time::Duration::from_secs(u64::from(secs)));
        // A decoded topic and payload are slices of the connection's read buffer: copied, so a
        // queued message holds its own few bytes and not the whole buffer they came in.
        // Larger payloads came in a buffer sized for them, so they keep it and skip the copy.
        let payload = match publish.payload.len() <= OWN_COPY_MAX {
            true => Bytes::copy_from_slice(&publish.payload),
            false => publish.payload,
        };
        Message {
            topic: ByteString::from(&*publish.topic),
            payload,
            qos: publish.qos,
            retain: publish.retain,
            properties,
            publisher,
            expires_at,
        }
    }

    /// Whether the message expiry interval has passed: such a message is never delivered.
    pub fn is_expired(&self, now: Instant) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }

    /// The PUBLISH that delivers this message to one subscriber.
    /// Below MQTT 5 (`with_properties` false) no properties are built at all.
    pub fn to_publish(
        &self,
        qos: QoS,
        retain: bool,
        packet_id: Option<u16>,
        now: Instant,
        sub_ids: &[u32],
        with_properties: bool,
    ) -> Publish {
        let mut properties = Properties::default();
        if with_properties {
            properties.clone_from(&self.properties);
            if let Some(at) = self.expires_at {
                // Forward the remaining lifetime, not the original interval [MQTT-3.3.2-6], in
                // whole seconds rounded up: a message sent on at once keeps its interval, as
                // Mosquitto's does, and none is forwarded as already expired.
                let left = at.saturating_duration_since(now);
                let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
                properties.message_expiry_interval = Some(secs.min(u64::from(u32::MAX)) as u32);
            }
            properties.subscription_identifiers.extend_from_slice(sub_ids);
        }
        Publish {
            dup: false,
            qos,
            retain,
            topic: self.topic.clone(),
            packet_id,
            properties,
            payload: self.payload.clone(),
        }
    }
}
