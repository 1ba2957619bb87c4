//! What is stored, in which shape: serde records (postcard-encoded), with each message kept as
//! the MQTT 5 PUBLISH that carries it, so the codec that is tested and fuzzed does the work.
//! A queued message is stored once (`Blob`, the messages table) however many persistent
//! sessions queue it; each session's delivery (`StoredDelivery`) refers to it by id.
//! Times are wall-clock milliseconds, since `Instant`s do not survive a restart.

use std::sync::atomic::{AtomicU64, Ordering};
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

/// A message with who published it, as the retained store and the cluster's stream keep it
/// (for `check_retain_source`). Records of the older shape, a bare `StoredMessage`, still read.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SourcedMessage {
    pub message: StoredMessage,
    /// The publisher's user name (`Message::publisher_user`).
    pub publisher_user: Option<String>,
}

impl SourcedMessage {
    pub fn new(message: &Message) -> SourcedMessage {
        SourcedMessage {
            message: StoredMessage::new(message),
            publisher_user: message.publisher_user.as_ref().map(|u| u.to_string()),
        }
    }

    /// Reads a record of either shape. A bare `StoredMessage` ends where this shape's last
    /// field would begin, so it never reads as this shape.
    pub fn decode(bytes: &[u8]) -> Result<SourcedMessage, StoreError> {
        from_bytes::<SourcedMessage>(bytes).or_else(|e| match from_bytes::<StoredMessage>(bytes) {
            Ok(message) => Ok(SourcedMessage { message, publisher_user: None }),
            Err(_) => Err(e),
        })
    }

    pub fn restore(&self) -> Result<Message, StoreError> {
        let mut message = self.message.restore()?;
        message.publisher_user = self.publisher_user.as_deref().map(Into::into);
        Ok(message)
    }
}

/// A message encoded once for the messages table, with the id deliveries refer to it by.
#[derive(Debug, PartialEq, Eq)]
pub struct Blob {
    pub id: u64,
    /// A `StoredMessage`.
    pub bytes: Vec<u8>,
}

/// Ids of the messages table. One sequence per process: several brokers in one process (tests,
/// embedders) share it, which keeps ids unique in each of their stores too.
static NEXT_MESSAGE_ID: AtomicU64 = AtomicU64::new(1);

impl Blob {
    pub fn new(message: &StoredMessage) -> Blob {
        Blob { id: NEXT_MESSAGE_ID.fetch_add(1, Ordering::Relaxed), bytes: to_bytes(message) }
    }

    /// A row read back from the store.
    pub fn stored(id: u64, bytes: Vec<u8>) -> Blob {
        // No new message may take an id a stored one has.
        NEXT_MESSAGE_ID.fetch_max(id + 1, Ordering::Relaxed);
        Blob { id, bytes }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum DeliveryState {
    Queued,
    /// PUBLISH sent with this packet id, not yet acknowledged.
    Sent(u16),
    /// PUBREL sent, waiting for PUBCOMP.
    Released(u16),
}

/// A message queued for (or in flight to) one session; the message itself is the messages
/// table's row it is stored under.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredDelivery {
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

/// A delivery as written before the messages table: the message inside. Read once at start-up
/// and written again in the new shape.
#[derive(Deserialize)]
pub struct LegacyDelivery {
    message: StoredMessage,
    qos: u8,
    retain: bool,
    subscription_ids: Vec<u32>,
    shared: Option<String>,
    pub state: DeliveryState,
}

impl LegacyDelivery {
    pub fn restore(self, seq: u64) -> Result<Delivery, StoreError> {
        let message = Arc::new(self.message.restore()?);
        let LegacyDelivery { qos, retain, subscription_ids, shared, state, .. } = self;
        StoredDelivery { qos, retain, subscription_ids, shared, state }.restore(message, seq)
    }
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
            qos: delivery.qos as u8,
            retain: delivery.retain,
            subscription_ids: delivery.subscription_ids.to_vec(),
            shared: delivery.shared.as_ref().map(|s| s.to_string()),
            state,
        }
    }

    pub fn restore(self, message: Arc<Message>, seq: u64) -> Result<Delivery, StoreError> {
        Ok(Delivery {
            message,
            qos: QoS::from_u8(self.qos).map_err(|e| StoreError::Corrupt(e.to_string()))?,
            retain: self.retain,
            subscription_ids: self.subscription_ids.into(),
            shared: self.shared.map(|s| Box::new(s.into())),
            seq,
        })
    }
}
