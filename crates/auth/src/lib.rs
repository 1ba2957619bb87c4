//! Who may connect and what they may do, as Mosquitto's files say it: password files
//! ([`password`]: `$6$`, `$7$`, `$argon2id$`), ACL files ([`acl`]), and the [`Authorizer`] seam
//! the broker asks on every publish, subscription and delivery. A crate of its own so that the
//! OwnTracks recorder checks its HTTP users against the same files without the whole broker.

pub mod acl;
mod authz;
pub mod password;

pub use authz::{AllowAll, Authorizer, ClientInfo};
