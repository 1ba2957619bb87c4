//! What is stored, in which shape: serde records (postcard-encoded), with each message kept as
//! the MQTT 5 PUBLISH that carries it, so the codec that is tested and fuzzed does the work.
//! Times are wall-clock milliseconds, since `Instant`s do not survive a restart.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cauldron_proto::{decode, BytesMut, Packet, Protocol, Publish, QoS};
use serde::{Deserialize, Serialize};

use super::StoreError;
use crate::message::Message;
use crate::session::Delivery;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredMessage {
    /// The message as an MQTT 5 PUBLISH: topic, payload, QoS, retain and properties.
    pub publish: Vec<u8>,
    pub publisher: Option<String>,
    pub expires_at_ms: Option<u64>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum DeliveryState {
    Queued,
    /// PUBLISH sent with this packet id, not yet acknowledged.
    Sent(u16),
    /// PUBREL sent, waiting for PUBCOMP.
    Released(u16),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredDelivery {
    pub message: StoredMessage,
    pub qos: u8,
    pub retain: bool,
    pub subscription_ids: Vec<u32>,
    pub shared: Option<String>,
    pub state: DeliveryState,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredSubscription {
    pub filter: String,
    /// The MQTT 5 subscription options byte.
    pub options: u8,
    pub id: Option<u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredSession {
    pub expiry_interval: u32,
    pub expires_at_ms: Option<u64>,
    pub subscriptions: Vec<StoredSubscription>,
    /// A will waiting out its delay, and when it is due.
    pub pending_will: Option<(StoredMessage, u64)>,
}

pub fn to_bytes<T: Serialize>(value: &T) -> Vec<u8> {
    postcard::to_allocvec(value).expect("records serialize to memory")
}

pub fn from_bytes<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, StoreError> {
    postcard::from_bytes(bytes).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// Wall-clock milliseconds for an instant (past or future).
pub fn wall_ms(at: Instant) -> u64 {
    let now = Instant::now();
    let wall_now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let wall = if at >= now { wall_now + (at - now) } else { wall_now.saturating_sub(now - at) };
    wall.as_millis() as u64
}

/// The instant for wall-clock milliseconds (the past maps to now).
pub fn instant(ms: u64) -> Instant {
    let wall_now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    Instant::now() + Duration::from_millis(ms).saturating_sub(wall_now)
}

impl StoredMessage {
    pub fn new(message: &Message) -> StoredMessage {
        let publish = message.to_publish(
            message.qos,
            message.retain,
            Some(1).filter(|_| message.qos != QoS::AtMostOnce),
            Instant::now(),
            &[],
            true,
        );
        let mut buf = BytesMut::new();
        // A message that came in through the codec always goes back out through it.
        Packet::Publish(publish).encode(Protocol::V5, &mut buf).expect("a received message re-encodes");
        StoredMessage {
            publish: buf.to_vec(),
            publisher: message.publisher.as_ref().map(|p| p.to_string()),
            expires_at_ms: message.expires_at.map(wall_ms),
        }
    }

    pub fn restore(&self) -> Result<Message, StoreError> {
        let mut buf = BytesMut::from(&self.publish[..]);
        let publish: Publish = match decode(&mut buf, Protocol::V5, usize::MAX) {
            Ok(Some(Packet::Publish(p))) => p,
            other => return Err(StoreError::Corrupt(format!("stored message is not a PUBLISH: {other:?}"))),
        };
        let mut message = Message::from_publish(publish, self.publisher.as_deref().map(Into::into));
        message.expires_at = self.expires_at_ms.map(instant);
        Ok(message)
    }
}

impl StoredDelivery {
    pub fn new(delivery: &Delivery, state: DeliveryState) -> StoredDelivery {
        StoredDelivery {
            message: StoredMessage::new(&delivery.message),
            qos: delivery.qos as u8,
            retain: delivery.retain,
            subscription_ids: delivery.subscription_ids.clone(),
            shared: delivery.shared.as_ref().map(|s| s.to_string()),
            state,
        }
    }

    pub fn restore(&self, seq: u64) -> Result<Delivery, StoreError> {
        Ok(Delivery {
            message: Arc::new(self.message.restore()?),
            qos: QoS::from_u8(self.qos).map_err(|e| StoreError::Corrupt(e.to_string()))?,
            retain: self.retain,
            subscription_ids: self.subscription_ids.clone(),
            shared: self.shared.as_deref().map(Into::into),
            seq,
        })
    }
}
