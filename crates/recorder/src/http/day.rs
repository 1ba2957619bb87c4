//! What the map shows beyond positions, in cauldron's own calls (the Recorder has none of them):
//! a device's regions and waypoints, its region transitions, and its day as a timeline.
//!
//! - `/api/0/waypoints?user&device`: `{"waypoints": [...]}` of its last waypoints export.
//! - `/api/0/events?user&device&from&to`: `{"events": [transition, ...]}`, oldest first.
//! - `/api/0/timeline?user&device&from&to`: `{"timeline": [stay or trip, ...]}`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{json, Value};

use super::access::Viewer;
use super::params::Params;
use super::{api, blocking, json, Api};
use crate::store::Range;
use crate::timeline::{self, Fix, Region};

pub async fn waypoints(State(api): State<Api>, viewer: Viewer, params: Params) -> Result<Response, Response> {
    let (user, device) = api::device_of(&api, &viewer, &params)?;
    let store = api.recorder.store().clone();
    let export = blocking(move || store.waypoints(&user, &device)).await?;
    let list = export
        .and_then(|j| serde_json::from_str::<Value>(&j).ok())
        .and_then(|v| v.get("waypoints").cloned())
        .unwrap_or_else(|| json!([]));
    Ok(json(StatusCode::OK, json!({ "waypoints": list }).to_string()))
}

pub async fn events(State(api): State<Api>, viewer: Viewer, params: Params) -> Result<Response, Response> {
    let (user, device) = api::device_of(&api, &viewer, &params)?;
    let (from, to) = api::range(&params)?;
    let store = api.recorder.store().clone();
    let records = blocking(move || store.records(&user, &device, from, to)).await?;
    let events: Vec<Value> = records
        .iter()
        .filter_map(|r| serde_json::from_slice::<Value>(&r.payload).ok())
        .filter(|v| v.get("_type").and_then(Value::as_str) == Some("transition"))
        .collect();
    Ok(json(StatusCode::OK, json!({ "events": events }).to_string()))
}

pub async fn timeline(State(api): State<Api>, viewer: Viewer, params: Params) -> Result<Response, Response> {
    let (user, device) = api::device_of(&api, &viewer, &params)?;
    let (from, to) = api::range(&params)?;
    let store = api.recorder.store().clone();
    let spans = blocking(move || {
        let points = store.locations(&user, &device, Range { from, to, limit: None })?;
        let regions = store.waypoints(&user, &device)?.map(|j| Region::from_export(&j)).unwrap_or_default();
        let fixes: Vec<Fix> = points
            .iter()
            .filter_map(|p| serde_json::from_str::<Value>(&p.json).ok())
            .filter_map(|v| v.as_object().and_then(Fix::from_location))
            .collect();
        Ok(timeline::timeline(&fixes, &regions))
    })
    .await?;
    Ok(json(StatusCode::OK, json!({ "timeline": spans }).to_string()))
}
