//! Authorization seam: the [`Authorizer`] trait and [`ClientInfo`] live in `cauldron-auth` (the
//! recorder shares them); what is the broker's own is a listener's access control.

pub use cauldron_auth::{AllowAll, Authorizer, ClientInfo};

/// Access control of one listener, for Mosquitto's `per_listener_settings true`: its own
/// anonymous rule, password file and ACL instead of the broker's.
pub struct ListenerAuth {
    pub allow_anonymous: bool,
    pub passwords: std::sync::Arc<crate::auth::password::Passwords>,
    pub authorizer: std::sync::Arc<dyn Authorizer>,
}
