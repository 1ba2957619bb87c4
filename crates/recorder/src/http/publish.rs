//! HTTP mode (`POST /pub`): the apps POST what they would publish, and get back their friends'
//! cards and last positions. The user is who logged in (Basic auth against the broker's
//! users), never a header; friends are who the broker's ACL lets that user read, unless a list
//! was set by hand for the device.

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{json, Map, Value};

use cauldron_auth::ClientInfo;

use super::access::{Access, Viewer};
use super::params::Params;
use super::Forward;
use super::{blocking, error, json, Api};
use crate::ingest::Via;
use crate::{crypto, view};

/// Friend fields returned in a location object, as the Recorder returns them.
const LOCATION_FIELDS: &[&str] = &["tid", "lat", "lon", "tst", "vel", "alt", "cog", "acc", "vac", "topic"];

pub async fn publish(
    State(api): State<Api>,
    viewer: Viewer,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Response> {
    let params = Params::from_parts(query.as_deref(), &headers);
    // A logged-in user is who they logged in as; only an open API takes the name from the request.
    let user = match viewer.name() {
        Some(name) => name.to_string(),
        None => params.name("u").or_else(|| params.name("user")).unwrap_or_else(|| "owntracks".into()),
    };
    let device = params.name("d").or_else(|| params.name("device")).unwrap_or_else(|| "phone".into());
    if !crate::topic::is_level(&user) || !crate::topic::is_level(&device) {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "user and device must each be one topic level (no / + # or NUL)",
        ));
    }
    let (recorder, access) = (api.recorder.clone(), api.access.clone());
    let topic = format!("owntracks/{user}/{device}");
    if !may_write(&access, &viewer, &topic) {
        return Err(error(StatusCode::FORBIDDEN, "the ACL does not let you write this device"));
    }
    if let Some(forward) = &api.forward {
        forward_to_mqtt(forward, &access, &viewer, &topic, &body);
    }
    let answer = blocking(move || {
        let (_, replies) = recorder.ingest_answering([(topic.as_str(), &body[..])], Via::Http)?;
        let store = recorder.store();
        let me = match viewer {
            Viewer::Admin(_) => Viewer::Admin(None),
            _ => Viewer::User(user.clone()),
        };
        let explicit = store.friends(&user, &device)?;
        let mut out = Vec::new();
        for last in store.last()? {
            let friend = match &explicit {
                Some(list) => list.iter().any(|f| names_device(f, &last.user, &last.device)),
                None => access.may_see(&me, &last.user, &last.device),
            };
            if !friend {
                continue;
            }
            let card = store.card(&last.user, &last.device)?;
            let object = view::last(&last, card.as_deref());
            if let (Some(name), Some(face)) = (object.get("name"), object.get("face")) {
                out.push(json!({"_type": "card", "tid": object["tid"], "name": name, "face": face}));
            }
            let mut location = Map::new();
            location.insert("_type".into(), "location".into());
            for key in LOCATION_FIELDS {
                if let Some(value) = object.get(*key) {
                    location.insert((*key).into(), value.clone());
                }
            }
            out.push(Value::Object(location));
        }
        // Answers to a request (tours) come first, as the Recorder adds them.
        let answers = replies.iter().filter_map(|r| serde_json::from_str::<Value>(&r.payload).ok());
        let array = Value::Array(answers.chain(out).collect()).to_string();
        Ok(match store.key(&user, &device)? {
            Some(secret) => {
                json!({"_type": "encrypted", "data": crypto::encrypt(&secret, array.as_bytes())}).to_string()
            }
            None => array,
        })
    })
    .await?;
    Ok(json(StatusCode::OK, answer))
}

/// Publishes a posted location, transition or card where the app would have published it over
/// MQTT (locations and cards retained, as the apps do), if the user may publish there. The
/// recorder sees it again through the broker and stores it once: the HTTP copy, already stored,
/// wins the duplicate check.
fn forward_to_mqtt(forward: &Forward, access: &Access, viewer: &Viewer, base: &str, body: &[u8]) {
    let kind =
        serde_json::from_slice::<Value>(body).ok().and_then(|v| v.get("_type")?.as_str().map(str::to_string));
    let (topic, retain) = match kind.as_deref() {
        Some("location") => (base.to_string(), true),
        Some("transition") => (format!("{base}/event"), false),
        Some("card") => (format!("{base}/info"), true),
        _ => return,
    };
    if may_write(access, viewer, &topic) {
        forward(&topic, body, retain);
    }
}

/// Whether the logged-in user may publish on `topic` by the broker's ACL, as they would have to
/// over MQTT: HTTP mode and OsmAnd reports store only what the user could have published. An
/// open API (no users) has nobody to ask.
pub(super) fn may_write(access: &Access, viewer: &Viewer, topic: &str) -> bool {
    match viewer.name() {
        None => true,
        Some(name) => {
            let client = ClientInfo { client_id: name.into(), username: Some(name.into()) };
            access.authorizer.allows_everything() || access.authorizer.can_publish(&client, topic)
        }
    }
}

/// Whether a hand-set friend entry (`user/device`, `user:device` or `user-device`) names this
/// device.
fn names_device(entry: &str, user: &str, device: &str) -> bool {
    ['/', ':', '-'].iter().any(|sep| entry.split_once(*sep).is_some_and(|(u, d)| u == user && d == device))
}
