//! MQTT 3.1, 3.1.1 and 5.0 control packets to and from bytes.
//!
//! This crate owns the wire format and nothing else: no sockets, no tokio, no broker policy.
//! Decoding is zero-copy (topics and payloads are slices of the read buffer), returns `Ok(None)`
//! on incomplete input, and rejects malformed input with an error naming the spec statement.

mod error;
mod packet;
mod properties;
mod reason;
#[cfg(feature = "scram")]
pub mod scram;
pub mod topic;
mod wire;

pub use bytes::{Bytes, BytesMut};
pub use bytestring::ByteString;
pub use error::{DecodeError, EncodeError};
pub use packet::{
    decode, encode_publish_v3, encoded_publish_v3_len, peek_short_ack, Ack, Auth, ConnAck, Connect,
    Disconnect, Packet, PacketType, Publish, RetainHandling, SubAck, SubOptions, Subscribe, Subscription,
    UnsubAck, Unsubscribe, Will,
};
pub use properties::Properties;
pub use reason::ReasonCode;

/// The protocol level a connection speaks, fixed by its CONNECT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    /// MQTT 3.1, protocol name "MQIsdp", level 3.
    V3_1,
    /// MQTT 3.1.1, protocol name "MQTT", level 4.
    V3_1_1,
    /// MQTT 5.0, protocol name "MQTT", level 5.
    V5,
}

impl Protocol {
    /// The protocol level byte of CONNECT.
    pub fn level(self) -> u8 {
        match self {
            Protocol::V3_1 => 3,
            Protocol::V3_1_1 => 4,
            Protocol::V5 => 5,
        }
    }

    /// The protocol name string of CONNECT.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::V3_1 => "MQIsdp",
            _ => "MQTT",
        }
    }

    /// Whether packets of this level carry properties and reason codes.
    pub fn is_v5(self) -> bool {
        self == Protocol::V5
    }
}

/// Quality of service of a message or a subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum QoS {
    #[default]
    AtMostOnce = 0,
    AtLeastOnce = 1,
    ExactlyOnce = 2,
}

impl QoS {
    /// Parses the two QoS bits; 3 is not a QoS [MQTT-3.3.1-4].
    pub fn from_u8(value: u8) -> Result<QoS, DecodeError> {
        match value {
            0 => Ok(QoS::AtMostOnce),
            1 => Ok(QoS::AtLeastOnce),
            2 => Ok(QoS::ExactlyOnce),
            _ => Err(DecodeError::InvalidQoS),
        }
    }
}

/// The largest value a variable byte integer can hold (four bytes) [MQTT-1.5.5].
pub const MAX_VARINT: u32 = 268_435_455;
