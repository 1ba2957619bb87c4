//! The OwnTracks Recorder API (`/api/0/...`), same paths, parameters and response shapes,
//! answering only with what the viewer may see.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::{json, Value};

use super::access::Viewer;
use super::params::Params;
use super::{blocking, error, json, typed, Api};
use crate::formats::Format;
use crate::store::Range;
use crate::{timefmt, view};

/// The Recorder API level this implements.
pub const API_VERSION: &str = "1.0.1";
/// `from` when none is given: the Recorder's DEFAULT_HISTORY_HOURS.
const DEFAULT_HISTORY: i64 = 6 * 3600;
const BLANK_PNG: &[u8] = include_bytes!("blank.png");

/// Behind the same login as the rest of the API: a version tells an attacker what to try.
pub async fn version(_viewer: Viewer) -> Response {
    let body = json!({"version": API_VERSION, "git": concat!("cauldron-", env!("CARGO_PKG_VERSION"))});
    json(StatusCode::OK, body.to_string())
}

fn results(list: Vec<String>) -> Response {
    json(StatusCode::OK, json!({ "results": list }).to_string())
}

/// Users; a user's devices; or a device's monthly history names.
pub async fn list(State(api): State<Api>, viewer: Viewer, params: Params) -> Result<Response, Response> {
    let store = api.recorder.store().clone();
    let (user, device) = (params.name("user"), params.name("device"));
    let access = api.access.clone();
    blocking(move || {
        Ok(match (user, device) {
            (None, _) => {
                let mut users = Vec::new();
                for user in store.users()? {
                    if store.devices(&user)?.iter().any(|d| access.may_see(&viewer, &user, d)) {
                        users.push(user);
                    }
                }
                results(users)
            }
            (Some(user), None) => {
                let devices = store.devices(&user)?.into_iter().filter(|d| access.may_see(&viewer, &user, d));
                results(devices.collect())
            }
            (Some(user), Some(device)) if access.may_see(&viewer, &user, &device) => {
                let months = store.months(&user, &device)?;
                results(months.into_iter().map(|m| format!("rec/{user}/{device}/{m}.rec")).collect())
            }
            (Some(_), Some(_)) => results(Vec::new()),
        })
    })
    .await
}

/// Last positions: an array, filtered by `user`/`device`, with `fields`.
pub async fn last(State(api): State<Api>, viewer: Viewer, params: Params) -> Result<Response, Response> {
    let lasts = last_objects(&api, viewer, params.name("user"), params.name("device")).await?;
    let fields = params.list("fields");
    let body: Vec<Value> = lasts.into_iter().map(|o| Value::Object(view::only(o, &fields))).collect();
    Ok(json(StatusCode::OK, Value::Array(body).to_string()))
}

/// Decorated last positions the viewer may see, optionally of one user or device.
pub async fn last_objects(
    api: &Api,
    viewer: Viewer,
    user: Option<String>,
    device: Option<String>,
) -> Result<Vec<serde_json::Map<String, Value>>, Response> {
    let store = api.recorder.store().clone();
    let access = api.access.clone();
    blocking(move || {
        let mut out = Vec::new();
        for last in store.last()? {
            let wanted = user.as_ref().is_none_or(|u| *u == last.user)
                && device.as_ref().is_none_or(|d| *d == last.device);
            if wanted && access.may_see(&viewer, &last.user, &last.device) {
                let card = store.card(&last.user, &last.device)?;
                out.push(view::last(&last, card.as_deref()));
            }
        }
        Ok(out)
    })
    .await
}

/// `from`/`to` of a request: 416 when unreadable or impossible, as the Recorder answers.
pub(super) fn range(params: &Params) -> Result<(i64, i64), Response> {
    let now = timefmt::now();
    let bad = || error(StatusCode::RANGE_NOT_SATISFIABLE, "impossible date/time ranges");
    let from = match params.get("from") {
        Some(text) => timefmt::parse(text).ok_or_else(bad)?,
        None => now - DEFAULT_HISTORY,
    };
    let to = match params.get("to") {
        Some(text) => timefmt::parse(text).ok_or_else(bad)?,
        None => now,
    };
    if from > to {
        return Err(bad());
    }
    Ok((from, to))
}

/// The user and device a request names; 416 (the Recorder's answer) without both, 403 when the
/// viewer may not see them.
pub(super) fn device_of(api: &Api, viewer: &Viewer, params: &Params) -> Result<(String, String), Response> {
    let (Some(user), Some(device)) = (params.name("user"), params.name("device")) else {
        return Err(error(StatusCode::RANGE_NOT_SATISFIABLE, "user and device are required"));
    };
    match api.access.may_see(viewer, &user, &device) {
        true => Ok((user, device)),
        false => Err(error(StatusCode::FORBIDDEN, "not yours to see")),
    }
}

/// The device a deleting request names, if the viewer owns it or is an admin.
fn owned_device(api: &Api, viewer: &Viewer, params: &Params) -> Result<(String, String), Response> {
    let (user, device) = device_of(api, viewer, params)?;
    match viewer.may_change(&user) {
        true => Ok((user, device)),
        false => Err(error(StatusCode::FORBIDDEN, "only the owner or an admin may delete")),
    }
}

/// A device's history in one of the Recorder's formats.
pub async fn locations(State(api): State<Api>, viewer: Viewer, params: Params) -> Result<Response, Response> {
    let (user, device) = device_of(&api, &viewer, &params)?;
    let (from, to) = range(&params)?;
    let format = match params.get("format") {
        None => Format::Json,
        Some(name) => {
            Format::parse(name).ok_or_else(|| error(StatusCode::BAD_REQUEST, "unrecognized format"))?
        }
    };
    let limit = params.get("limit").and_then(|l| l.parse().ok()).filter(|l| *l > 0);
    let fields = params.list("fields");
    let store = api.recorder.store().clone();
    let range = Range { from, to, limit };
    let body =
        blocking(move || format.locations(store.as_ref(), &user, &device, range, &fields, API_VERSION))
            .await?;
    Ok(typed(StatusCode::OK, format.content_type(), body))
}

/// Deletes points: those at `tst`, or all with `from <= tst <= to` (both required, so nothing
/// is deleted by default). Admins and the owner only.
pub async fn delete_locations(
    State(api): State<Api>,
    viewer: Viewer,
    params: Params,
) -> Result<Response, Response> {
    let (user, device) = owned_device(&api, &viewer, &params)?;
    let bounds = match (params.get("tst"), params.get("from"), params.get("to")) {
        (Some(tst), _, _) => tst.parse::<i64>().ok().map(|t| (t, t)),
        (None, Some(from), Some(to)) => timefmt::parse(from).zip(timefmt::parse(to)),
        _ => None,
    };
    let Some((from, to)) = bounds else {
        return Err(error(StatusCode::BAD_REQUEST, "give tst, or from and to"));
    };
    let store = api.recorder.store().clone();
    let deleted = blocking(move || store.delete_locations(&user, &device, from, to)).await?;
    Ok(json(StatusCode::OK, json!({ "deleted": deleted }).to_string()))
}

/// Deletes a whole device. Admins and the owner only.
pub async fn delete_device(
    State(api): State<Api>,
    viewer: Viewer,
    params: Params,
) -> Result<Response, Response> {
    let (user, device) = owned_device(&api, &viewer, &params)?;
    let store = api.recorder.store().clone();
    let deleted = blocking(move || store.delete_device(&user, &device)).await?;
    Ok(json(StatusCode::OK, json!({ "deleted": deleted }).to_string()))
}

/// The Recorder's `kill`: deletes a device, answering in its shape.
pub async fn kill(State(api): State<Api>, viewer: Viewer, params: Params) -> Result<Response, Response> {
    let (user, device) = owned_device(&api, &viewer, &params)?;
    let store = api.recorder.store().clone();
    let (months, had_last) = {
        let (user, device) = (user.clone(), device.clone());
        blocking(move || {
            let months = store.months(&user, &device)?;
            let had_last = store.last()?.iter().any(|l| l.user == user && l.device == device);
            store.delete_device(&user, &device)?;
            Ok((months, had_last))
        })
        .await?
    };
    let killed: Vec<String> = months.iter().map(|m| format!("{m}.rec")).collect();
    let body =
        json!({"path": format!("rec/{user}/{device}"), "status": "OK", "last": had_last, "killed": killed});
    Ok(json(StatusCode::OK, body.to_string()))
}

/// The user's card face as PNG, or a transparent 40×40 PNG.
pub async fn photo(State(api): State<Api>, viewer: Viewer, params: Params) -> Result<Response, Response> {
    let png = |bytes: Vec<u8>| ([(header::CONTENT_TYPE, "image/png")], bytes).into_response();
    let Some(user) = params.name("user") else {
        return Err(error(StatusCode::RANGE_NOT_SATISFIABLE, "user is required"));
    };
    let store = api.recorder.store().clone();
    let access = api.access.clone();
    let face = blocking(move || {
        let devices = store.devices(&user)?;
        if !devices.iter().any(|d| access.may_see(&viewer, &user, d)) {
            return Ok(None);
        }
        let card = store.user_card(&user)?;
        Ok(card.and_then(|c| view::parse(&c).get("face").and_then(Value::as_str).map(str::to_string)))
    })
    .await?;
    let bytes = face.and_then(|f| STANDARD.decode(f.trim()).ok()).unwrap_or_else(|| BLANK_PNG.to_vec());
    Ok(png(bytes))
}

/// `<epoch> <topic>` of the last message received.
pub async fn monitor(State(api): State<Api>, viewer: Viewer) -> Response {
    match (viewer, api.recorder.monitor()) {
        (Viewer::Admin(_), Some((at, topic))) => format!("{at} {topic}\n").into_response(),
        _ => "\n".into_response(),
    }
}

/// Reverse-geocoding cache lookup: cauldron does no reverse geocoding, so always `{}`.
pub async fn q(_viewer: Viewer, params: Params) -> Response {
    let number = |key| params.get(key).and_then(|v| v.trim().parse::<f64>().ok());
    let (Some(lat), Some(lon)) = (number("lat"), number("lon")) else {
        return json(StatusCode::OK, "{}".into());
    };
    // The place list loads at the first lookup: not on the runtime's threads.
    let found =
        tokio::task::spawn_blocking(move || (crate::geo::address(lat, lon), crate::zone::name(lat, lon)))
            .await;
    let Ok((Some(address), zone)) = found else {
        return json(StatusCode::OK, "{}".into());
    };
    let mut answer = serde_json::Map::new();
    answer.insert("ghash".into(), address.ghash.into());
    let named =
        [("addr", address.addr), ("locality", address.locality), ("cc", address.cc), ("tzname", zone)];
    for (key, value) in named {
        if let Some(value) = value {
            answer.insert(key.into(), value.into());
        }
    }
    json(StatusCode::OK, Value::Object(answer).to_string())
}
