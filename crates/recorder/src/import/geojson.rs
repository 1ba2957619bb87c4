//! GeoJSON: `Point` features (the Recorder's and cauldron's own `geojson` exports among them)
//! and `LineString`/`MultiLineString` features with one time per coordinate (`coordTimes` or
//! `times`, as GPX converters write them). The time of a point is its `tst`, `timestamp`,
//! `time` or `isotst` property; OwnTracks location fields among the properties are kept.

use serde_json::{Map, Value};

use super::{round, time, FileError, Fix, Parsed};

/// Properties that are fields of an OwnTracks location and keep their meaning.
const LOCATION_FIELDS: &[&str] =
    &["acc", "batt", "bs", "conn", "inregions", "m", "p", "poi", "SSID", "BSSID", "t", "tid", "vac"];

pub fn read(bytes: &[u8]) -> Result<Parsed, FileError> {
    let root: Value = serde_json::from_slice(bytes).map_err(|e| FileError::json(&e))?;
    let mut parsed = Parsed::default();
    match root.get("type").and_then(Value::as_str) {
        Some("FeatureCollection") => {
            let Some(features) = root.get("features").and_then(Value::as_array) else {
                return Err(FileError::new("features", "a FeatureCollection without a features array"));
            };
            for (i, feature) in features.iter().enumerate() {
                self::feature(&mut parsed, &format!("features[{i}]"), feature);
            }
        }
        Some("Feature") => feature(&mut parsed, "feature", &root),
        Some(other) => {
            return Err(FileError::new("type", format!("{other:?} is not a Feature or FeatureCollection")))
        }
        None => return Err(FileError::new("line 1", "not GeoJSON (no \"type\")")),
    }
    Ok(parsed)
}

fn feature(parsed: &mut Parsed, at: &str, feature: &Value) {
    let empty = Map::new();
    let properties = feature.get("properties").and_then(Value::as_object).unwrap_or(&empty);
    let geometry = feature.get("geometry").unwrap_or(&Value::Null);
    let coordinates = geometry.get("coordinates").unwrap_or(&Value::Null);
    match geometry.get("type").and_then(Value::as_str) {
        Some("Point") => {
            let tst =
                ["tst", "timestamp", "time", "isotst"].iter().find_map(|k| properties.get(*k).and_then(time));
            let Some(tst) = tst else {
                return parsed
                    .reject(at.to_string(), "a point without a time (tst, timestamp, time or isotst)");
            };
            match position(coordinates) {
                Some((lon, lat, alt)) => {
                    let mut fix = Fix::at(tst, lat, lon);
                    fix.alt = round(alt)
                        .or_else(|| properties.get("alt").and_then(Value::as_f64).map(|a| a.round() as i64));
                    fix.vel = properties.get("vel").and_then(Value::as_i64);
                    fix.cog = properties.get("cog").and_then(Value::as_i64);
                    for key in LOCATION_FIELDS {
                        if let Some(value) = properties.get(*key) {
                            fix.extra.insert((*key).into(), value.clone());
                        }
                    }
                    if let Some(acc) = fix.extra.remove("acc") {
                        fix.acc = acc.as_f64().map(|a| a.round() as i64);
                    }
                    parsed.fix(|| at.to_string(), fix);
                }
                None => parsed.reject(at.to_string(), "coordinates are not [longitude, latitude]"),
            }
        }
        Some("LineString") => {
            line(parsed, at, coordinates, times(properties).map(|t| t.get(..).unwrap_or_default()))
        }
        Some("MultiLineString") => {
            let lines = coordinates.as_array().map(Vec::as_slice).unwrap_or_default();
            let all_times = times(properties);
            for (k, coordinates) in lines.iter().enumerate() {
                let times = all_times.and_then(|t| t.get(k)).and_then(Value::as_array).map(Vec::as_slice);
                line(parsed, &format!("{at}.coordinates[{k}]"), coordinates, times);
            }
        }
        Some(other) => parsed.reject(at.to_string(), format!("a {other} is no position")),
        None => parsed.reject(at.to_string(), "no geometry"),
    }
}

fn times(properties: &Map<String, Value>) -> Option<&[Value]> {
    ["coordTimes", "times", "coordinateProperties"]
        .iter()
        .find_map(|k| properties.get(*k))
        .and_then(|v| v.get("times").unwrap_or(v).as_array())
        .map(Vec::as_slice)
}

fn line(parsed: &mut Parsed, at: &str, coordinates: &Value, times: Option<&[Value]>) {
    let points = coordinates.as_array().map(Vec::as_slice).unwrap_or_default();
    let Some(times) = times.filter(|t| t.len() == points.len()) else {
        return parsed.reject(at.to_string(), "a line without one time per coordinate (coordTimes)");
    };
    for (i, (point, when)) in points.iter().zip(times).enumerate() {
        let here = || format!("{at}.coordinates[{i}]");
        match (position(point), time(when)) {
            (Some((lon, lat, alt)), Some(tst)) => {
                let mut fix = Fix::at(tst, lat, lon);
                fix.alt = round(alt);
                parsed.fix(here, fix);
            }
            (None, _) => parsed.reject(here(), "not [longitude, latitude]"),
            (_, None) => parsed.reject(here(), "its time is not a time"),
        }
    }
}

/// `[lon, lat]` or `[lon, lat, alt]`.
fn position(value: &Value) -> Option<(f64, f64, Option<f64>)> {
    let numbers = value.as_array()?;
    Some((numbers.first()?.as_f64()?, numbers.get(1)?.as_f64()?, numbers.get(2).and_then(Value::as_f64)))
}

#[cfg(test)]
mod tests {
    use super::super::Entry;
    use super::*;

    #[test]
    fn points_and_timed_lines_are_read() {
        let file = serde_json::json!({"type": "FeatureCollection", "features": [
            {"type": "Feature", "geometry": {"type": "Point", "coordinates": [2.29, 48.85, 35]},
             "properties": {"tst": 1706856000, "acc": 12.4, "batt": 80, "name": "jp"}},
            {"type": "Feature", "geometry": {"type": "Point", "coordinates": [2.29, 48.85]}, "properties": {}},
            {"type": "Feature", "geometry": {"type": "LineString", "coordinates": [[2.3, 48.86], [2.31, 48.87]]},
             "properties": {"coordTimes": ["2024-02-02T06:50:00Z", "2024-02-02T06:51:00Z"]}},
            {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": []}}
        ]});
        let parsed = read(file.to_string().as_bytes()).unwrap();
        let Entry::Fix(first) = &parsed.entries[0] else { panic!() };
        assert_eq!(
            (first.alt, first.acc, first.extra.get("batt")),
            (Some(35), Some(12), Some(&serde_json::json!(80)))
        );
        assert!(!first.extra.contains_key("name"), "not a location field");
        assert_eq!(parsed.entries.len(), 3);
        let positions: Vec<_> = parsed.rejected.iter().map(|r| r.position.as_str()).collect();
        assert_eq!(positions, ["features[1]", "features[3]"]);
        let e = read(b"{\"type\": \"FeatureCollection\",\n \"features\": [}").unwrap_err();
        assert!(e.position.starts_with("line 2 column"), "{e}");
    }
}
