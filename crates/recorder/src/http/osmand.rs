//! OsmAnd's (and Traccar's) tracking protocol, as the Recorder accepts it: `GET
//! /?id=user/device&lat=..&lon=..&timestamp=..` with optional `altitude`, `bearing`, `batt` and
//! `speed` (knots). Each request becomes an OwnTracks location marked `_proto: "osmand"`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};

use super::access::Viewer;
use super::params::Params;
use super::{blocking, error, Api};
use crate::ingest::Via;
use crate::{timefmt, topic};

/// Whether the query is an OsmAnd report rather than a visit to the map page.
pub fn is_report(params: &Params) -> bool {
    params.get("id").is_some() && params.get("lat").is_some() && params.get("lon").is_some()
}

/// Stores one OsmAnd report; answers `tak` as the Recorder does. A logged-in user may only
/// report for their own devices.
pub async fn report(api: &Api, viewer: &Viewer, params: &Params) -> Result<Response, Response> {
    let id = params.get("id").unwrap_or_default();
    let Some((user, device)) = id.split_once('/').map(|(u, d)| (u.to_string(), d.to_string())) else {
        return Err(error(StatusCode::BAD_REQUEST, "id must be user/device"));
    };
    if !topic::is_level(&user) || !topic::is_level(&device) {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "user and device must each be one topic level (no / + # or NUL)",
        ));
    }
    if !super::publish::may_write(&api.access, viewer, &format!("owntracks/{user}/{device}")) {
        return Err(error(StatusCode::FORBIDDEN, "the ACL does not let you write this device"));
    }
    if let Viewer::User(name) = viewer {
        if *name != user {
            return Err(error(StatusCode::FORBIDDEN, "report for your own devices only"));
        }
    }
    // `NaN` and `inf` parse as numbers but are no coordinates (and JSON has no such values).
    let number =
        |key: &str| params.get(key).and_then(|v| v.trim().parse::<f64>().ok()).filter(|n| n.is_finite());
    let (Some(lat), Some(lon)) = (number("lat"), number("lon")) else {
        return Err(error(StatusCode::BAD_REQUEST, "lat and lon must be numbers"));
    };
    let tst = match (number("timestamp"), params.get("timestamp")) {
        // Traccar's clients send milliseconds, OsmAnd seconds.
        (Some(n), _) if n > 1e11 => Some((n / 1000.0) as i64),
        (Some(n), _) => Some(n as i64),
        (None, Some(text)) => timefmt::parse(text),
        (None, None) => None,
    };
    let mut location = Map::new();
    location.insert("_type".into(), "location".into());
    location.insert("_proto".into(), "osmand".into());
    location.insert("lat".into(), lat.into());
    location.insert("lon".into(), lon.into());
    location.insert("tst".into(), tst.unwrap_or_else(timefmt::now).into());
    for (key, field) in [("altitude", "alt"), ("bearing", "cog"), ("batt", "batt")] {
        if let Some(value) = number(key) {
            location.insert(field.into(), json!(value.round() as i64));
        }
    }
    if let Some(knots) = number("speed") {
        location.insert("vel".into(), json!((knots * 1.852).round() as i64));
    }
    let payload = Value::Object(location).to_string();
    let recorder = api.recorder.clone();
    let topic = format!("owntracks/{user}/{device}");
    blocking(move || recorder.ingest([(topic.as_str(), payload.as_bytes())], Via::Http)).await?;
    Ok("tak".into_response())
}
