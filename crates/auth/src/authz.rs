//! Authorization seam: who may publish to, subscribe to, and receive from which topics. The
//! broker asks an `Authorizer`; the default allows everything. Mosquitto's ACL file is one
//! implementation (see the access-control issue); tests and embedders can supply their own.

use cauldron_proto::ByteString;

/// Who a client is, as far as authorization is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientInfo {
    pub client_id: ByteString,
    pub username: Option<ByteString>,
}

/// Decides access per topic. Called on the publish path: implementations must be fast and must
/// not block.
pub trait Authorizer: Send + Sync + 'static {
    /// May this client publish to `topic` (including its will)?
    fn can_publish(&self, client: &ClientInfo, topic: &str) -> bool;
    /// May this client subscribe to `filter`? A refused filter gets SUBACK 0x80 / 0x87.
    fn can_subscribe(&self, client: &ClientInfo, filter: &str) -> bool;
    /// May this client receive a message on `topic`? Checked on every delivery.
    fn can_receive(&self, client: &ClientInfo, topic: &str) -> bool;
    /// True if every answer is yes, so the hot path can skip asking.
    fn allows_everything(&self) -> bool {
        false
    }
}

/// The default: no access control.
#[derive(Debug, Default, Clone, Copy)]
pub struct AllowAll;

impl Authorizer for AllowAll {
    fn can_publish(&self, _: &ClientInfo, _: &str) -> bool {
        true
    }
    fn can_subscribe(&self, _: &ClientInfo, _: &str) -> bool {
        true
    }
    fn can_receive(&self, _: &ClientInfo, _: &str) -> bool {
        true
    }
    fn allows_everything(&self) -> bool {
        true
    }
}
