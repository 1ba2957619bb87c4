//! The map page at `/`: plain HTML, CSS and JavaScript compiled into the binary, no build step
//! and no third-party code. Tiles come from the configured server at run time; without it
//! the page still draws positions and tracks on a blank background.

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use super::access::Viewer;
use super::params::Params;
use super::{osmand, Api};

const PAGE: &str = include_str!("../map/index.html");
pub(super) const SCRIPT: &str = include_str!("../map/map.js");
pub(super) const STYLE: &str = include_str!("../map/map.css");

/// The map page, or an OsmAnd report when the query is one (the Recorder takes both at `/`).
pub async fn page(State(api): State<Api>, viewer: Viewer, params: Params) -> Response {
    if osmand::is_report(&params) {
        return osmand::report(&api, &viewer, &params).await.unwrap_or_else(|refusal| refusal);
    }
    with_settings(&api, None)
}

/// The map page in tour mode: one device's track between two times, read-only.
pub(super) fn tour_page(api: &Api, tour: &serde_json::Value) -> Response {
    with_settings(api, Some(tour))
}

fn with_settings(api: &Api, tour: Option<&serde_json::Value>) -> Response {
    // Settings go into the page as JSON: serde quotes them, and `<` cannot end the script.
    let quoted = |value: &serde_json::Value| value.to_string().replace('<', "\\u003c");
    let tiles = quoted(&serde_json::Value::from(&*api.tile_url));
    let mut body = PAGE.replace("\"@@TILE_URL@@\"", &tiles);
    if let Some(tour) = tour {
        body = body.replace("tileUrl:", &format!("tour: {}, tileUrl:", quoted(tour)));
    }
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], body).into_response()
}

pub async fn script(_viewer: Viewer) -> Response {
    ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8")], SCRIPT).into_response()
}

pub async fn style(_viewer: Viewer) -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], STYLE).into_response()
}
