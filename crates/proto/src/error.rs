//! Typed decode and encode errors. Each names the normative statement it enforces and maps to the
//! MQTT 5 reason code a broker sends before closing the connection.

use crate::ReasonCode;

/// Why a byte sequence is not a valid MQTT packet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("[MQTT-1.5.5-1] variable byte integer is longer than 4 bytes")]
    VarIntTooLong,
    #[error("[MQTT-2.1.3-1] packet type {0} is reserved")]
    ReservedPacketType(u8),
    #[error("[MQTT-2.1.3-1] wrong reserved flag bits 0b{flags:04b} on packet type {packet_type}")]
    ReservedFlags { packet_type: u8, flags: u8 },
    #[error("packet of {size} bytes exceeds the maximum packet size of {max} bytes")]
    PacketTooLarge { size: usize, max: usize },
    #[error("packet ends before its content is complete")]
    Truncated,
    #[error("{0} bytes left over after the end of the packet's content")]
    TrailingBytes(usize),
    #[error("[MQTT-1.5.4-1] string is not well-formed UTF-8")]
    InvalidUtf8,
    #[error("[MQTT-1.5.4-2] string contains the null character U+0000")]
    NullCharacter,
    #[error("[MQTT-3.3.2-2] topic name contains a wildcard character")]
    WildcardInTopicName,
    #[error("[MQTT-4.7.3-1] topic name or filter is empty")]
    EmptyTopic,
    #[error("[MQTT-4.7.1-1] '#' must be alone in the last level of a topic filter")]
    InvalidMultiLevelWildcard,
    #[error("[MQTT-4.7.1-2] '+' must occupy a whole level of a topic filter")]
    InvalidSingleLevelWildcard,
    #[error("[MQTT-4.8.2-2] shared subscription filter is not $share/<group>/<filter>")]
    InvalidSharedSubscription,
    #[error("[MQTT-2.3.1-1] packet identifier must be non-zero")]
    ZeroPacketId,
    #[error("[MQTT-3.3.1-4] QoS 3 is not a valid QoS")]
    InvalidQoS,
    #[error("[MQTT-3.3.1-2] DUP flag set on a QoS 0 PUBLISH")]
    DupOnQoS0,
    #[error("[MQTT-2.2.2-2] property 0x{0:02x} appears more than once")]
    DuplicateProperty(u8),
    #[error("[MQTT-2.2.2-2] property 0x{id:02x} is not allowed in {context}")]
    PropertyNotAllowed { id: u8, context: &'static str },
    #[error("[MQTT-2.2.2-2] unknown property identifier 0x{0:02x}")]
    UnknownProperty(u8),
    #[error("invalid value {value} for property 0x{id:02x}")]
    InvalidPropertyValue { id: u8, value: u32 },
    #[error("[MQTT-3.1.2-1] protocol name {0:?} is neither \"MQTT\" nor \"MQIsdp\"")]
    InvalidProtocolName(String),
    #[error("[MQTT-3.1.2-2] unsupported protocol level {0}")]
    UnsupportedProtocolLevel(u8),
    #[error("[MQTT-3.1.2-3] reserved CONNECT flag is set")]
    ConnectReservedFlag,
    #[error("[MQTT-3.1.2-11] will QoS or will retain set without the will flag")]
    WillFlagsWithoutWill,
    #[error("[MQTT-3.1.2-22] password flag set without the user name flag")]
    PasswordWithoutUsername,
    #[error("[MQTT-3.2.2-1] reserved CONNACK flag bits are set")]
    ConnAckReservedFlags,
    #[error("[MQTT-3.8.3-3] SUBSCRIBE carries no topic filter")]
    EmptySubscribe,
    #[error("[MQTT-3.10.3-2] UNSUBSCRIBE carries no topic filter")]
    EmptyUnsubscribe,
    #[error("[MQTT-3.8.3-4] reserved bits of the subscription options are set")]
    SubscriptionOptionsReserved,
    #[error("[MQTT-3.8.3-4] retain handling 3 is reserved")]
    InvalidRetainHandling,
    #[error("reason code 0x{code:02x} is not valid in {context}")]
    InvalidReasonCode { code: u8, context: &'static str },
    #[error("[MQTT-3.3.2-1] PUBLISH without topic name or topic alias")]
    MissingTopic,
    #[error("topic name or filter has more than {max} levels", max = crate::topic::MAX_LEVELS)]
    TooManyTopicLevels,
}

impl DecodeError {
    /// The reason code an MQTT 5 peer sends in CONNACK or DISCONNECT before closing.
    pub fn reason_code(&self) -> ReasonCode {
        match self {
            DecodeError::PacketTooLarge { .. } => ReasonCode::PacketTooLarge,
            DecodeError::UnsupportedProtocolLevel(_) | DecodeError::InvalidProtocolName(_) => {
                ReasonCode::UnsupportedProtocolVersion
            }
            // The spec names these Protocol Errors (2.2.2.2, 3.1.2.11, 3.8.2.1.2). A property
            // not valid for its packet is a Malformed Packet (2.2.2.2), and so, as Mosquitto
            // says, is a zero packet id (4.13 leaves the choice open).
            DecodeError::DuplicateProperty(_)
            | DecodeError::InvalidPropertyValue { .. }
            | DecodeError::InvalidSharedSubscription => ReasonCode::ProtocolError,
            DecodeError::WildcardInTopicName | DecodeError::MissingTopic => ReasonCode::TopicNameInvalid,
            _ => ReasonCode::MalformedPacket,
        }
    }
}

/// Why a packet cannot be written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("[MQTT-1.5.4] string or binary field of {0} bytes exceeds 65535 bytes")]
    FieldTooLong(usize),
    #[error("[MQTT-2.2.3] packet of {0} bytes exceeds the largest encodable size")]
    PacketTooLarge(usize),
    #[error("{0} cannot be sent at this protocol level")]
    NotInProtocol(&'static str),
}
