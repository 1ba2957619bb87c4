//! Tours, as the apps ask for them (`_type: request` on `owntracks/<user>/<device>/request`):
//! `tour` makes a shared, read-only view of the device's track between two times, `tours` lists
//! the device's views, `untour` withdraws one. The answers are `cmd` messages on the device's
//! `cmd` topic (in HTTP mode, in the POST's answer), as the Recorder sends them.

use serde_json::{json, Map, Value};

use crate::store::{Op, Store, StoreError, Tour};
use crate::timefmt;
use crate::topic::Origin;

/// A view stays this long after its tour ends, so a finished trip can still be shared.
pub const KEEP_AFTER_END: i64 = 30 * 86_400;

/// A message for the device, sent once the batch that asked for it is stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub topic: String,
    pub payload: String,
}

/// What a request becomes: store operations and the answer.
#[derive(Debug, Default)]
pub struct Handled {
    pub ops: Vec<Op>,
    pub reply: Option<Reply>,
}

/// Handles one request; `base_url` is where views are reached (`https://host`), if known.
pub fn request(
    store: &dyn Store,
    origin: &Origin,
    object: &Map<String, Value>,
    now: i64,
    base_url: Option<&str>,
) -> Result<Handled, StoreError> {
    let reply_to = format!("{}/cmd", origin.base_topic());
    let answer = |body: Value| Some(Reply { topic: reply_to.clone(), payload: body.to_string() });
    let mut handled = Handled::default();
    match object.get("request").and_then(Value::as_str) {
        Some("tour") => {
            let Some(tour) = object.get("tour").and_then(Value::as_object) else { return Ok(handled) };
            let time = |key| {
                tour.get(key)
                    .and_then(Value::as_str)
                    .and_then(|t| timefmt::parse_iso(t).or_else(|| timefmt::parse(t)))
            };
            let (Some(from), Some(to)) = (time("from"), time("to")) else {
                let refusal = json!({"_type": "cmd", "action": "response", "request": "tour", "status": 400,
                    "error": "from and to must be ISO 8601 times"});
                handled.reply = answer(refusal);
                return Ok(handled);
            };
            let uuid = uuid::Uuid::new_v4().to_string();
            let path = format!("/view/{uuid}");
            let url = match base_url {
                Some(base) => format!("{}{path}", base.trim_end_matches('/')),
                None => path,
            };
            let mut shared = tour.clone();
            shared.insert("uuid".into(), uuid.clone().into());
            shared.insert("url".into(), url.into());
            let json = Value::Object(shared.clone()).to_string();
            handled.ops.push(Op::Tour(Tour {
                uuid,
                user: origin.user.clone(),
                device: origin.device.clone(),
                from: from.min(to),
                to: to.max(from),
                expires: to.max(from) + KEEP_AFTER_END,
                json,
            }));
            handled.reply = answer(
                json!({"_type": "cmd", "action": "response", "request": "tour", "status": 200, "tour": shared}),
            );
        }
        Some("tours") => {
            let tours: Vec<Value> = store
                .tours(&origin.user, &origin.device, now)?
                .iter()
                .filter_map(|t| serde_json::from_str(&t.json).ok())
                .collect();
            let body = json!({"_type": "cmd", "action": "response", "request": "tours", "ntours": tours.len(), "tours": tours});
            handled.reply = answer(body);
        }
        Some("untour") => {
            if let Some(uuid) = object.get("uuid").and_then(Value::as_str) {
                let (user, device) = (origin.user.clone(), origin.device.clone());
                handled.ops.push(Op::Untour { user, device, uuid: uuid.to_string() });
            }
        }
        _ => {}
    }
    Ok(handled)
}
