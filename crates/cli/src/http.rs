//! The HTTP listener: Prometheus `/metrics`, `/healthz` (the process answers) and `/readyz`
//! (the broker serves MQTT: state loaded, listeners open, not shutting down).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use cauldron_broker::auth::password::Passwords;
use cauldron_broker::{Broker, CancellationToken};
use tokio::net::TcpListener;
use tracing::info;

#[derive(Clone)]
pub struct Http {
    pub broker: Arc<Broker>,
    pub ready: Arc<AtomicBool>,
    /// The recorder's API, live feed and map, when the recorder runs.
    pub recorder: Option<cauldron_recorder::http::Api>,
    /// When set, `/metrics` takes a login of these users (if there are any): the default on an
    /// address other than loopback, unless `--metrics-public`.
    pub metrics_login: Option<Arc<Passwords>>,
}

pub fn router(state: Http) -> Router {
    let recorder = state.recorder.clone();
    let ops = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .with_state(state);
    match recorder {
        Some(api) => ops.merge(cauldron_recorder::http::router(api)),
        None => ops,
    }
}

async fn metrics(State(http): State<Http>, parts: Parts) -> Response {
    let file = http.metrics_login.as_ref().and_then(|p| p.current()).filter(|f| !f.is_empty());
    if let Some(file) = file {
        let login = cauldron_recorder::http::basic_credentials(&parts);
        let allowed = match login {
            Some((user, password)) => file.check_off_runtime(user, password.into_bytes()).await,
            None => false,
        };
        if !allowed {
            let challenge = [(header::WWW_AUTHENTICATE, "Basic realm=\"cauldron metrics\"")];
            return (StatusCode::UNAUTHORIZED, challenge, "login required\n").into_response();
        }
    }
    let body = cauldron_broker::metrics::render(&http.broker);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body).into_response()
}

async fn ready(State(http): State<Http>) -> impl IntoResponse {
    match (http.ready.load(Ordering::Relaxed), http.broker.store_writable()) {
        (true, true) => (StatusCode::OK, "ready\n"),
        (true, false) => (StatusCode::SERVICE_UNAVAILABLE, "not ready: the store cannot write\n"),
        (false, _) => (StatusCode::SERVICE_UNAVAILABLE, "not ready\n"),
    }
}

/// Serves HTTP on `listener` until `shutdown`.
pub async fn serve(listener: TcpListener, state: Http, shutdown: CancellationToken) -> std::io::Result<()> {
    info!("HTTP listening on {}", listener.local_addr()?);
    // The peer address decides who may use a recorder API that has no users (loopback only).
    let app = router(state).into_make_service_with_connect_info::<std::net::SocketAddr>();
    axum::serve(listener, app).with_graceful_shutdown(shutdown.cancelled_owned()).await
}
