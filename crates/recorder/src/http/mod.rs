//! The recorder's HTTP side (axum): the OwnTracks Recorder API under `/api/0/`, the live feed
//! `/ws/last`, HTTP mode `POST /pub`, and the map page at `/`.

// Handlers answer failures with a ready response; its size on the error path does not matter.
#![allow(clippy::result_large_err)]

mod access;
mod api;
mod cors;
mod day;
mod import;
mod map;
mod osmand;
mod params;
mod publish;
mod tour;
mod ws;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, on, post, MethodFilter};
use axum::Router;

pub use access::{basic_credentials, Access};
pub use cors::check_origin;

use crate::ingest::Recorder;
use crate::store::StoreError;

/// Everything the handlers share.
#[derive(Clone)]
pub struct Api {
    pub recorder: Arc<Recorder>,
    pub access: Arc<Access>,
    /// Tile URL template of the map page (`{z}/{x}/{y}`).
    pub tile_url: Arc<str>,
    /// Origins whose pages may call the API with the user's login (`--recorder-cors-origin`).
    pub cors_origins: Arc<[String]>,
    /// A folder served at `/` behind the same login (a built owntracks/frontend, say); the
    /// built-in map then moves to `/map`.
    pub docroot: Option<std::path::PathBuf>,
    /// Publishes what HTTP-mode apps post (topic, payload, retain) to the broker, so that
    /// MQTT-mode friends see them too; `None` when there is no broker at hand.
    pub forward: Option<Forward>,
    /// The largest file `POST /api/0/import` takes, in bytes.
    pub import_limit: usize,
}

/// See [`Api::forward`].
pub type Forward = Arc<dyn Fn(&str, &[u8], bool) + Send + Sync>;

/// The recorder's routes; merge them into the server's router. Serve it with
/// `into_make_service_with_connect_info::<SocketAddr>()`: without users, only loopback peers
/// are let in, and that needs the peer address.
pub fn router(api: Api) -> Router {
    // The Recorder answers GET and POST alike.
    let either = || MethodFilter::GET.or(MethodFilter::POST);
    let map_at = if api.docroot.is_some() { "/map" } else { "/" };
    let routes = Router::new()
        .route("/api/0/version", on(either(), api::version))
        .route("/api/0/list", on(either(), api::list))
        .route("/api/0/last", on(either(), api::last))
        .route("/api/0/locations", on(either(), api::locations).delete(api::delete_locations))
        .route("/api/0/device", delete(api::delete_device))
        // Deleting takes more than a link: a GET (an image tag, a prefetch) never deletes.
        .route("/api/0/kill", post(api::kill).delete(api::kill))
        .route("/api/0/photo", on(either(), api::photo))
        .route("/api/0/photo/", on(either(), api::photo))
        .route("/api/0/monitor", on(either(), api::monitor))
        .route("/api/0/q", on(either(), api::q))
        .route("/api/0/waypoints", on(either(), day::waypoints))
        .route("/api/0/events", on(either(), day::events))
        .route("/api/0/timeline", on(either(), day::timeline))
        // The one route with a large body: a whole file of history.
        .route("/api/0/import", post(import::import).layer(DefaultBodyLimit::max(api.import_limit)))
        .route("/ws/last", get(ws::last))
        // Tours' views: no login, the link is the key.
        .route("/view/map.js", get(tour::script))
        .route("/view/map.css", get(tour::style))
        .route("/view/{uuid}", get(tour::page))
        .route("/view/{uuid}/locations", get(tour::locations))
        .route("/pub", post(publish::publish))
        .route(map_at, get(map::page))
        .route("/map.js", get(map::script))
        .route("/map.css", get(map::style));
    let routes = match &api.docroot {
        // Files behind the same login as the API: a browser that logged in for the page sends
        // the login with the page's own API calls and WebSocket.
        Some(dir) => routes.fallback_service(
            Router::new()
                .fallback_service(tower_http::services::ServeDir::new(dir))
                .layer(axum::middleware::from_fn_with_state(api.clone(), access::require_login))
                .with_state(api.clone()),
        ),
        None => routes,
    };
    routes.layer(axum::middleware::from_fn_with_state(api.clone(), cors::layer)).with_state(api)
}

/// A JSON response as the Recorder sends it (see [`typed`]).
fn json(status: StatusCode, body: String) -> Response {
    typed(status, "application/json", body)
}

/// A response as the Recorder sends its data: with `Access-Control-Allow-Origin: *` and
/// `X-Content-Length`.
fn typed(status: StatusCode, content_type: &'static str, body: String) -> Response {
    let length = HeaderValue::from(body.len());
    let mut response = (status, [(header::CONTENT_TYPE, content_type)], body).into_response();
    response.headers_mut().insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    response.headers_mut().insert("x-content-length", length);
    response
}

/// A plain-text error.
fn error(status: StatusCode, message: &str) -> Response {
    (status, format!("{message}\n")).into_response()
}

/// Runs a store call on the blocking pool; a store failure is a 500 that names it.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, Response> {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => {
            tracing::error!("recorder store: {e}");
            Err(error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()))
        }
        Err(_) => Err(error(StatusCode::INTERNAL_SERVER_ERROR, "store task failed")),
    }
}
