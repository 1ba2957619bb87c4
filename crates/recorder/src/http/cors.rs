//! Cross-origin access for a frontend served elsewhere (owntracks/frontend on its own host).
//!
//! Without allowed origins the API keeps the Recorder's `Access-Control-Allow-Origin: *`: any page
//! may read what needs no login, and nothing that does (a browser sends no credentials to `*`).
//! An origin the operator allows (`--recorder-cors-origin`) gets its own name back with
//! `Access-Control-Allow-Credentials: true`, so its requests may carry the user's login, and its
//! preflights are answered; every other origin's preflight is refused.

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::Api;

/// What a preflight may ask for: the API's methods, and the headers the Recorder's clients send.
const METHODS: &str = "GET, POST, DELETE, OPTIONS";
const HEADERS: &str = "Authorization, Content-Type, X-Limit-U, X-Limit-D, X-Limit-User, X-Limit-Device, \
                       X-Limit-From, X-Limit-To, X-Limit-Fields, X-Limit-Format";

/// Whether `origin` is what a browser sends as `Origin`: `scheme://host[:port]`, nothing after.
pub fn check_origin(origin: &str) -> Result<(), String> {
    let (scheme, rest) = origin.split_once("://").ok_or("expected scheme://host[:port]")?;
    let rest = rest.trim_end_matches('/');
    if !matches!(scheme, "http" | "https") || rest.is_empty() || rest.contains(['/', '?', '#', '@', ' ', '*'])
    {
        return Err("expected http(s)://host[:port], without a path or wildcard".into());
    }
    Ok(())
}

/// The request's `Origin` if the operator allows it.
pub fn allowed_origin<'a>(api: &Api, headers: &'a HeaderMap) -> Option<&'a HeaderValue> {
    let origin = headers.get(header::ORIGIN)?;
    let text = origin.to_str().ok()?;
    api.cors_origins.iter().any(|allowed| allowed.trim_end_matches('/') == text).then_some(origin)
}

/// Answers preflights and marks responses for allowed origins.
pub async fn layer(State(api): State<Api>, request: Request, next: Next) -> Response {
    let origin = allowed_origin(&api, request.headers()).cloned();
    if request.method() == Method::OPTIONS {
        return preflight(&api, origin);
    }
    let mut response = next.run(request).await;
    if let Some(origin) = origin {
        let headers = response.headers_mut();
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        headers.insert(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, HeaderValue::from_static("true"));
        headers.append(header::VARY, HeaderValue::from_static("Origin"));
        headers.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, HeaderValue::from_static("X-Content-Length"));
    }
    response
}

fn preflight(api: &Api, origin: Option<HeaderValue>) -> Response {
    let allow_origin = match origin {
        Some(origin) => origin,
        // An origin the operator did not name: only the anonymous `*` the Recorder gives, and
        // only while no origin is named at all.
        None if api.cors_origins.is_empty() => HeaderValue::from_static("*"),
        None => return (StatusCode::FORBIDDEN, "origin not allowed\n").into_response(),
    };
    let credentials = allow_origin != "*";
    let mut response = StatusCode::NO_CONTENT.into_response();
    let headers = response.headers_mut();
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allow_origin);
    headers.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static(METHODS));
    headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, HeaderValue::from_static(HEADERS));
    headers.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
    headers.insert(header::VARY, HeaderValue::from_static("Origin"));
    if credentials {
        headers.insert(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, HeaderValue::from_static("true"));
    }
    response
}
