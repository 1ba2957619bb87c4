//! HTTP mode (`POST /pub`): the apps POST what they would publish, and get back their friends'
//! cards and last positions. The user is who logged in (Basic auth against the broker's
//! users), never a header; friends are who the broker's ACL lets that user read, unless a list
//! was set by hand for the device.

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{json, Map, Value};

use super::access::Viewer;
use super::params::Params;
use super::{blocking, json, Api};
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
        Some(name) => crate::topic::name(name),
        None => params.name("u").or_else(|| params.name("user")).unwrap_or_else(|| "owntracks".into()),
    };
    let device = params.name("d").or_else(|| params.name("device")).unwrap_or_else(|| "phone".into());
    let (recorder, access) = (api.recorder.clone(), api.access.clone());
    let topic = format!("owntracks/{user}/{device}");
    let answer = blocking(move || {
        recorder.ingest([(topic.as_str(), &body[..])], Via::Http)?;
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
        let array = Value::Array(out).to_string();
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

/// Whether a hand-set friend entry (`user/device`, `user:device` or `user-device`) names this
/// device.
fn names_device(entry: &str, user: &str, device: &str) -> bool {
    ['/', ':', '-'].iter().any(|sep| {
        entry
            .split_once(*sep)
            .is_some_and(|(u, d)| crate::topic::name(u) == user && crate::topic::name(d) == device)
    })
}
