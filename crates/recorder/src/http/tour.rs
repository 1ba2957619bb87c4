//! `/view/<uuid>`: a tour's read-only view, for whoever has the link (no login: the link is
//! the key). The page is the map in tour mode; its data, `/view/<uuid>/locations`, is the
//! device's track between the tour's times with nothing but time, place, speed and altitude.
//! Past its expiry a view answers 410.

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};

use super::{blocking, error, json, map, Api};
use crate::store::{Range, Tour};
use crate::timefmt;

/// The fields of a point a view shows (and `isotst`, from `tst`).
const SHOWN: &[&str] = &["tst", "lat", "lon", "vel", "alt"];

async fn live_tour(api: &Api, uuid: String) -> Result<Tour, Response> {
    let store = api.recorder.store().clone();
    match blocking(move || store.tour(&uuid)).await? {
        Some(tour) if tour.expires > timefmt::now() => Ok(tour),
        Some(_) => Err(error(StatusCode::GONE, "this view has expired")),
        None => Err(error(StatusCode::NOT_FOUND, "no such view")),
    }
}

pub async fn page(State(api): State<Api>, Path(uuid): Path<String>) -> Result<Response, Response> {
    let tour = live_tour(&api, uuid).await?;
    let label = serde_json::from_str::<Value>(&tour.json)
        .ok()
        .and_then(|v| v.get("label").and_then(Value::as_str).map(str::to_string))
        .unwrap_or_default();
    let settings = json!({"uuid": tour.uuid, "label": label, "from": tour.from, "to": tour.to});
    Ok(map::tour_page(&api, &settings))
}

pub async fn locations(State(api): State<Api>, Path(uuid): Path<String>) -> Result<Response, Response> {
    let tour = live_tour(&api, uuid).await?;
    let store = api.recorder.store().clone();
    let (user, device) = (tour.user.clone(), tour.device.clone());
    // The tour's own bounds are included: the Range's are exclusive.
    let range = Range { from: tour.from - 1, to: tour.to + 1, limit: None };
    let points = blocking(move || store.locations(&user, &device, range)).await?;
    let data: Vec<Value> = points
        .iter()
        .filter_map(|p| serde_json::from_str::<Map<String, Value>>(&p.json).ok().map(|o| (p, o)))
        .map(|(p, object)| {
            let mut shown: Map<String, Value> =
                SHOWN.iter().filter_map(|k| object.get(*k).map(|v| ((*k).to_string(), v.clone()))).collect();
            shown.insert("isotst".into(), timefmt::iso(p.tst).into());
            Value::Object(shown)
        })
        .collect();
    Ok(json(
        StatusCode::OK,
        json!({"from": tour.from, "to": tour.to, "count": data.len(), "data": data}).to_string(),
    ))
}

pub async fn script() -> Response {
    ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8")], map::SCRIPT).into_response()
}

pub async fn style() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], map::STYLE).into_response()
}
