//! Stored JSON as the API serves it: the Recorder's added fields (`username`, `device`,
//! `topic`, `isotst`, `disptst`, `isorcv`, card `name`/`face`) on top of what the app sent.

use serde_json::{Map, Value};

use crate::store::{Last, Point};
use crate::timefmt;
use crate::topic::Origin;

/// Adds who and when to a location-like object. A missing `tid` gets the device name's last two
/// characters, as the apps default it.
pub fn decorate(object: &mut Map<String, Value>, user: &str, device: &str) {
    object.insert("username".into(), user.into());
    object.insert("device".into(), device.into());
    object.entry("topic").or_insert_with(|| format!("owntracks/{user}/{device}").into());
    if !object.contains_key("tid") {
        let chars: Vec<char> = device.chars().collect();
        let tid: String = chars[chars.len().saturating_sub(2)..].iter().collect();
        object.insert("tid".into(), tid.into());
    }
    if let Some(tst) = object.get("tst").and_then(Value::as_i64) {
        object.insert("isotst".into(), timefmt::iso(tst).into());
        object.insert("disptst".into(), timefmt::display(tst).into());
    }
}

/// Copies the card's `name` and `face` onto an object.
pub fn add_card(object: &mut Map<String, Value>, card: Option<&str>) {
    let Some(Value::Object(card)) = card.and_then(|c| serde_json::from_str(c).ok()) else { return };
    for key in ["name", "face"] {
        if let Some(value) = card.get(key) {
            object.insert(key.into(), value.clone());
        }
    }
}

pub fn parse(json: &str) -> Map<String, Value> {
    match serde_json::from_str(json) {
        Ok(Value::Object(object)) => object,
        _ => Map::new(),
    }
}

/// A device's last position for `/api/0/last` and `LAST` on `/ws/last`.
pub fn last(last: &Last, card: Option<&str>) -> Map<String, Value> {
    let mut object = parse(&last.json);
    decorate(&mut object, &last.user, &last.device);
    add_card(&mut object, card);
    object
}

/// One point of `/api/0/locations`.
pub fn point(point: &Point, user: &str, device: &str) -> Map<String, Value> {
    let mut object = parse(&point.json);
    decorate(&mut object, user, device);
    object.insert("isorcv".into(), timefmt::iso(point.rcv).into());
    object
}

/// What `/ws/last` clients receive when something is recorded.
pub fn live(origin: &Origin, mut object: Map<String, Value>, card: Option<&str>) -> String {
    decorate(&mut object, &origin.user, &origin.device);
    add_card(&mut object, card);
    Value::Object(object).to_string()
}

/// Keeps only the named keys (the API's `fields=a,b`); no list keeps everything.
pub fn only(object: Map<String, Value>, fields: &[String]) -> Map<String, Value> {
    if fields.is_empty() {
        return object;
    }
    object.into_iter().filter(|(k, _)| fields.iter().any(|f| f == k)).collect()
}
