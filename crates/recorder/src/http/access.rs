//! Who is asking, and what they may see. With users in the broker's password file, every
//! request logs in with HTTP Basic and sees the devices the broker's ACL lets that user read
//! (`owntracks/<user>/<device>`); admins see everything. Without users the API is open, but only
//! to loopback peers.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use cauldron_auth::password::Passwords;
use cauldron_auth::{Authorizer, ClientInfo};

use super::Api;

/// Access settings of the recorder's HTTP side.
pub struct Access {
    /// The broker's users (the same file, reloaded with it).
    pub passwords: Arc<Passwords>,
    /// The broker's ACL.
    pub authorizer: Arc<dyn Authorizer>,
    /// Users who see and may change every device.
    pub admins: Vec<String>,
    /// Behind an authenticating reverse proxy: take the user from this header instead of Basic
    /// auth. Only for proxies that set it themselves.
    pub user_header: Option<String>,
}

impl Access {
    /// Whether the broker has users, so that the API needs a login.
    pub fn has_users(&self) -> bool {
        self.user_header.is_some() || self.passwords.current().is_some_and(|f| !f.is_empty())
    }

    /// Whether `viewer` may read `user`'s `device`: the question the broker's ACL answers for
    /// a subscriber of `owntracks/+/+`.
    pub fn may_see(&self, viewer: &Viewer, user: &str, device: &str) -> bool {
        match viewer {
            Viewer::Admin(_) => true,
            Viewer::User(name) => {
                let client =
                    ClientInfo { client_id: name.as_str().into(), username: Some(name.as_str().into()) };
                owns(name, user)
                    || self.authorizer.can_receive(&client, &format!("owntracks/{user}/{device}"))
            }
        }
    }
}

/// The one asking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Viewer {
    /// An admin (named), or anyone on loopback when the broker has no users (unnamed).
    Admin(Option<String>),
    User(String),
}

impl Viewer {
    /// Whether this viewer may delete `user`'s data: admins, and the user themselves.
    pub fn may_change(&self, user: &str) -> bool {
        match self {
            Viewer::Admin(_) => true,
            Viewer::User(name) => owns(name, user),
        }
    }

    /// The logged-in name: `None` on an open (user-less) API.
    pub fn name(&self) -> Option<&str> {
        match self {
            Viewer::Admin(name) => name.as_deref(),
            Viewer::User(name) => Some(name),
        }
    }
}

/// Whether the logged-in `name` is the stored `user`: exactly, since `Alice` and `alice` (or
/// ` alice`) are different users of the password file.
fn owns(name: &str, user: &str) -> bool {
    name == user
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Basic realm=\"cauldron\", charset=\"UTF-8\"")],
        "login required\n",
    )
        .into_response()
}

/// `Authorization: Basic` credentials.
pub fn basic_credentials(parts: &Parts) -> Option<(String, String)> {
    let value = parts.headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let encoded = value.strip_prefix("Basic ").or_else(|| value.strip_prefix("basic "))?;
    let decoded = String::from_utf8(STANDARD.decode(encoded.trim()).ok()?).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

impl FromRequestParts<Api> for Viewer {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, api: &Api) -> Result<Viewer, Response> {
        let access = &api.access;
        let admin_or = |name: String| match access.admins.contains(&name) {
            true => Viewer::Admin(Some(name)),
            false => Viewer::User(name),
        };
        if let Some(header_name) = &access.user_header {
            let user = parts.headers.get(header_name.as_str()).and_then(|v| v.to_str().ok());
            return user.filter(|u| !u.is_empty()).map(|u| admin_or(u.to_string())).ok_or_else(unauthorized);
        }
        if access.has_users() {
            let Some((user, password)) = basic_credentials(parts) else { return Err(unauthorized()) };
            let file = access.passwords.current().ok_or_else(unauthorized)?;
            // Hash checks are deliberately slow: off the async workers, in the broker's bound.
            let checked = file.check_off_runtime(user.clone(), password.into_bytes()).await;
            return match checked {
                true => Ok(admin_or(user)),
                false => Err(unauthorized()),
            };
        }
        let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0);
        match peer {
            Some(addr) if addr.ip().is_loopback() => Ok(Viewer::Admin(None)),
            _ => Err((StatusCode::FORBIDDEN, "no users are configured: the API answers loopback only\n")
                .into_response()),
        }
    }
}

/// Lets a request through only for a viewer (the docroot's files).
pub async fn require_login(
    axum::extract::State(api): axum::extract::State<Api>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let (mut parts, body) = request.into_parts();
    if let Err(refused) = Viewer::from_request_parts(&mut parts, &api).await {
        return refused;
    }
    next.run(axum::extract::Request::from_parts(parts, body)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_differing_in_case_or_spaces_are_different_users() {
        assert!(owns("jane", "jane"));
        assert!(!owns("Jane", "jane"));
        assert!(!owns("jane ", "jane"));
        assert!(!owns("jane doe", "jane-doe"));
        assert!(!owns("john", "jane"));
        assert!(!Viewer::User("Jane".into()).may_change("jane"));
        assert!(Viewer::User("jane".into()).may_change("jane"));
        assert!(!Viewer::User("john".into()).may_change("jane"));
        assert!(Viewer::Admin(None).may_change("jane"));
    }
}
