//! Request parameters the Recorder's way: query string, form body, or `X-Limit-<name>` headers,
//! a header winning. Values are kept as sent: names are case-sensitive.

use std::collections::HashMap;

use axum::extract::{FromRequest, Request};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

#[derive(Debug, Default, Clone)]
pub struct Params(HashMap<String, String>);

/// Largest form body read for parameters.
const FORM_LIMIT: usize = 64 * 1024;

impl Params {
    /// From a query string and headers (no body).
    pub fn from_parts(query: Option<&str>, headers: &HeaderMap) -> Params {
        let mut params = Params::default();
        if let Some(query) = query {
            params.extend(query);
        }
        for (name, value) in headers {
            if let (Some(key), Ok(value)) = (name.as_str().strip_prefix("x-limit-"), value.to_str()) {
                params.0.insert(key.to_string(), value.to_string());
            }
        }
        params
    }

    fn extend(&mut self, encoded: &str) {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(encoded).unwrap_or_default();
        for (key, value) in pairs {
            self.0.entry(key).or_insert(value);
        }
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str).filter(|v| !v.is_empty())
    }

    /// A user or device name, exactly as sent.
    pub fn name(&self, key: &str) -> Option<String> {
        self.get(key).map(String::from)
    }

    /// A comma-separated list (`fields=lat,lon`).
    pub fn list(&self, key: &str) -> Vec<String> {
        self.get(key)
            .map(|v| v.split(',').map(|f| f.trim().to_string()).filter(|f| !f.is_empty()).collect())
            .unwrap_or_default()
    }
}

impl<S: Send + Sync> FromRequest<S> for Params {
    type Rejection = Response;

    async fn from_request(request: Request, state: &S) -> Result<Params, Response> {
        let is_form = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
        let mut params = Params::from_parts(request.uri().query(), request.headers());
        if is_form {
            let body =
                axum::body::Bytes::from_request(request, state).await.map_err(IntoResponse::into_response)?;
            if body.len() > FORM_LIMIT {
                return Err((StatusCode::PAYLOAD_TOO_LARGE, "form too large\n").into_response());
            }
            params.extend(&String::from_utf8_lossy(&body));
        }
        Ok(params)
    }
}
