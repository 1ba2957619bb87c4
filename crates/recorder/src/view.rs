//! Stored JSON as the API serves it: the Recorder's added fields (`username`, `device`,
//! `topic`, `isotst`, `disptst`, `isorcv`, card `name`/`face`) on top of what the app sent.

use serde_json::{Map, Value};

use crate::store::{Last, Point};
use crate::timefmt;
use crate::topic::Origin;

/// The tracker id the apps use when none is set: the device name's last two characters.
fn default_tid(device: &str) -> String {
    let chars: Vec<char> = device.chars().collect();
    chars[chars.len().saturating_sub(2)..].iter().collect()
}

/// Adds who and when to a location-like object. A missing `tid` gets the device name's last two
/// characters, as the apps default it.
pub fn decorate(object: &mut Map<String, Value>, user: &str, device: &str) {
    object.insert("username".into(), user.into());
    object.insert("device".into(), device.into());
    object.entry("topic").or_insert_with(|| format!("owntracks/{user}/{device}").into());
    if !object.contains_key("tid") {
        object.insert("tid".into(), default_tid(device).into());
    }
    if let Some(tst) = object.get("tst").and_then(Value::as_i64) {
        object.insert("isotst".into(), timefmt::iso(tst).into());
        object.insert("disptst".into(), timefmt::display(tst).into());
        let local =
            object.get("tzname").and_then(Value::as_str).and_then(|zone| crate::zone::isolocal(tst, zone));
        if let Some(local) = local {
            object.insert("isolocal".into(), local.into());
        }
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

/// The same object as [`point`], as JSON text, built by appending the added fields to the stored
/// text instead of parsing it: the month-of-points query spends its time here. Falls back to
/// [`point`] when the stored object already has one of the fields the Recorder adds.
pub fn point_json(point: &Point, user: &str, device: &str) -> String {
    let text = point.json.trim();
    let has = |key: &str| text.contains(&format!("\"{key}\":"));
    let spliceable = text.starts_with('{')
        && text.ends_with('}')
        && text.len() > 2
        && !["username", "device", "isotst", "disptst", "isorcv", "isolocal"].iter().any(|k| has(k));
    if !spliceable {
        return Value::Object(self::point(point, user, device)).to_string();
    }
    let quoted = |s: &str| Value::from(s).to_string();
    let mut out = String::with_capacity(text.len() + 160);
    out.push_str(&text[..text.len() - 1]);
    out.push_str(",\"username\":");
    out.push_str(&quoted(user));
    out.push_str(",\"device\":");
    out.push_str(&quoted(device));
    if !has("topic") {
        out.push_str(",\"topic\":");
        out.push_str(&quoted(&format!("owntracks/{user}/{device}")));
    }
    if !has("tid") {
        out.push_str(",\"tid\":");
        out.push_str(&quoted(&default_tid(device)));
    }
    for (key, value) in [
        ("isotst", timefmt::iso(point.tst)),
        ("disptst", timefmt::display(point.tst)),
        ("isorcv", timefmt::iso(point.rcv)),
    ] {
        out.push_str(&format!(",\"{key}\":\"{value}\""));
    }
    // A zone name is letters, digits, `/`, `_`, `-` and `+`: read straight from the text.
    let zone =
        text.split_once("\"tzname\":\"").and_then(|(_, rest)| rest.split_once('"')).map(|(zone, _)| zone);
    if let Some(local) = zone.and_then(|zone| crate::zone::isolocal(point.tst, zone)) {
        out.push_str(&format!(",\"isolocal\":\"{local}\""));
    }
    out.push('}');
    out
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The fast text path gives the same object as parsing and decorating.
    #[test]
    fn point_json_equals_the_decorated_object() {
        let stored = [
            r#"{"_type":"location","lat":1.5,"lon":2.5,"tid":"jp","tst":1706856298}"#,
            r#"{"_type":"location","lat":1.5,"lon":2.5,"tst":1706856298,"topic":"owntracks/jane/phone","_http":true}"#,
            r#"{"_type":"location","lat":1.5,"lon":2.5,"tst":1706856298,"username":"someone else"}"#,
            r#"{"_type":"location","lat":48.85,"lon":2.35,"tst":1706856298,"tzname":"Europe/Paris"}"#,
        ];
        for json in stored {
            let point = Point { tst: 1706856298, rcv: 1706856300, json: json.to_string() };
            let fast: Value = serde_json::from_str(&point_json(&point, "jane", "phone")).unwrap();
            assert_eq!(fast, Value::Object(self::point(&point, "jane", "phone")), "{json}");
        }
        let paris = Point { tst: 1706856298, rcv: 1706856300, json: stored[3].to_string() };
        let fast: Value = serde_json::from_str(&point_json(&paris, "jane", "phone")).unwrap();
        assert_eq!(fast["isolocal"], "2024-02-02T07:44:58+0100");
    }
}
