//! An application message as the broker holds it: shared by `Arc` between the retained store and
//! every subscriber's queue, so the payload is never copied per subscriber.

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use cauldron_proto::{ByteString, Bytes, Properties, Publish, QoS};

use crate::store::record::{Blob, StoredMessage};

/// Payloads up to the connection's largest read buffer are copied out of it by `compacted`.
const OWN_COPY_MAX: usize = 64 * 1024;

#[derive(Debug)]
pub struct Message {
    pub topic: ByteString,
    pub payload: Bytes,
    pub qos: QoS,
    pub retain: bool,
    /// MQTT 5 properties forwarded to subscribers (never the topic alias or subscription ids);
    /// boxed, and only when there are any: most messages have none, and a `Properties` inline
    /// would make every message (moved into its `Arc`, read on every delivery) 400 bytes larger.
    properties: Option<Box<Properties>>,
    /// Client id of the publisher, for the no-local subscription option.
    pub publisher: Option<ByteString>,
    /// User name of the publisher of a retained message, for `check_retain_source` (whether
    /// it may still write the topic when the message is sent to a new subscriber).
    pub publisher_user: Option<ByteString>,
    /// When the message expiry interval runs out.
    pub expires_at: Option<Instant>,
    /// Its sequence in a cluster's stream, when it came from there (0: it did not).
    pub stream_seq: u64,
    /// Topic and payload hold their own bytes (see `compacted`).
    compact: bool,
    /// The message as the store keeps it, made by the first persistent session that queues
    /// it: every other session's stored delivery refers to the same row (`store::Blob`).
    stored: OnceLock<Arc<Blob>>,
}

impl Message {
    /// A message made in-process (not decoded from a client), with no properties.
    pub fn new(topic: ByteString, payload: Bytes, qos: QoS, retain: bool) -> Message {
        Message {
            topic,
            payload,
            qos,
            retain,
            properties: None,
            publisher: None,
            publisher_user: None,
            expires_at: None,
            stream_seq: 0,
            stored: OnceLock::new(),
            // Its bytes are the caller's own, not a slice of some larger read buffer.
            compact: true,
        }
    }

    /// Takes an inbound PUBLISH (topic alias already resolved) as a broker message.
    pub fn from_publish(publish: Publish, publisher: Option<ByteString>) -> Message {
        let mut properties = publish.properties;
        properties.topic_alias = None;
        properties.subscription_identifiers.clear();
        let expires_at = properties
            .message_expiry_interval
            .map(|secs| Instant::now() + std::time::Duration::from_secs(u64::from(secs)));
        let properties = (!properties.is_empty()).then(|| Box::new(properties));
        Message {
            // Larger payloads came in a buffer sized for them: nothing to compact.
            compact: publish.payload.len() > OWN_COPY_MAX,
            topic: publish.topic,
            payload: publish.payload,
            qos: publish.qos,
            retain: publish.retain,
            properties,
            publisher,
            publisher_user: None,
            expires_at,
            stream_seq: 0,
            stored: OnceLock::new(),
        }
    }

    /// A decoded message's topic and payload are slices of the read buffer they arrived in,
    /// up to 64 KB that one small message would keep alive. That costs nothing for a message
    /// that goes out at once, so only one that stays (retained, or queued for a subscriber
    /// that is offline or behind) is copied into bytes of its own, once.
    pub fn compacted(self: &Arc<Message>) -> Arc<Message> {
        if self.compact {
            return Arc::clone(self);
        }
        Arc::new(Message {
            topic: ByteString::from(&*self.topic),
            payload: Bytes::copy_from_slice(&self.payload),
            qos: self.qos,
            retain: self.retain,
            properties: self.properties.clone(),
            publisher: self.publisher.clone(),
            publisher_user: self.publisher_user.clone(),
            expires_at: self.expires_at,
            stream_seq: self.stream_seq,
            compact: true,
            stored: OnceLock::new(),
        })
    }

    /// Its MQTT 5 properties, as subscribers get them (see `properties`).
    pub fn properties(&self) -> Option<&Properties> {
        self.properties.as_deref()
    }

    /// The message encoded for the store, once however many sessions queue it.
    pub(crate) fn stored(&self) -> &Arc<Blob> {
        self.stored.get_or_init(|| Arc::new(Blob::new(&StoredMessage::new(self))))
    }

    /// A message read back from the store's row `blob`: queued again, it refers to that row.
    pub(crate) fn restored_from(self, blob: Arc<Blob>) -> Message {
        let _ = self.stored.set(blob);
        self
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
            if let Some(own) = &self.properties {
                properties.clone_from(own);
            }
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
