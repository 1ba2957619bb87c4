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
const SCRIPT: &str = include_str!("../map/map.js");
const STYLE: &str = include_str!("../map/map.css");

/// The map page, or an OsmAnd report when the query is one (the Recorder takes both at `/`).
pub async fn page(State(api): State<Api>, viewer: Viewer, params: Params) -> Response {
    if osmand::is_report(&params) {
        return osmand::report(&api, &viewer, &params).await.unwrap_or_else(|refusal| refusal);
    }
    // The tile URL goes into a JSON string inside the page: serde quotes it safely.
    let tiles =
        serde_json::to_string(&*api.tile_url).unwrap_or_else(|_| "\"\"".into()).replace('<', "\\u003c");
    let body = PAGE.replace("\"@@TILE_URL@@\"", &tiles);
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], body).into_response()
}

pub async fn script(_viewer: Viewer) -> Response {
    ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8")], SCRIPT).into_response()
}

pub async fn style(_viewer: Viewer) -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], STYLE).into_response()
}
