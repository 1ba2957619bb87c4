//! Google location history: Takeout's `Records.json` (every raw fix), its Semantic Location
//! History (`2019_APRIL.json`: visits and journeys), and the newer on-device Timeline exports
//! (`Timeline.json` from Android with `semanticSegments` and `rawSignals`, and the iOS array of
//! segments with `geo:` positions).

use serde::Deserialize;
use serde_json::Value;

use super::{round, time, FileError, Fix, Parsed};
use crate::timefmt;

/// One fix of `Records.json`, typed: files hold millions of them.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawRecord {
    latitude_e7: Option<i64>,
    longitude_e7: Option<i64>,
    accuracy: Option<f64>,
    altitude: Option<f64>,
    /// Metres per second.
    velocity: Option<f64>,
    heading: Option<f64>,
    timestamp: Option<String>,
    timestamp_ms: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Export {
    locations: Option<Vec<RawRecord>>,
    timeline_objects: Option<Vec<Value>>,
    semantic_segments: Option<Vec<Value>>,
    raw_signals: Option<Vec<Value>>,
}

pub fn read(bytes: &[u8]) -> Result<Parsed, FileError> {
    let mut parsed = Parsed::default();
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    if first == Some(&b'[') {
        let segments: Vec<Value> = serde_json::from_slice(bytes).map_err(|e| FileError::json(&e))?;
        for (i, segment) in segments.iter().enumerate() {
            ios_segment(&mut parsed, &format!("[{i}]"), segment);
        }
        return Ok(parsed);
    }
    let export: Export = serde_json::from_slice(bytes).map_err(|e| FileError::json(&e))?;
    let mut known = false;
    if let Some(records) = export.locations {
        known = true;
        for (i, record) in records.iter().enumerate() {
            raw_record(&mut parsed, i, record);
        }
    }
    if let Some(objects) = export.timeline_objects {
        known = true;
        for (i, object) in objects.iter().enumerate() {
            timeline_object(&mut parsed, &format!("timelineObjects[{i}]"), object);
        }
    }
    if let Some(segments) = export.semantic_segments {
        known = true;
        for (i, segment) in segments.iter().enumerate() {
            semantic_segment(&mut parsed, &format!("semanticSegments[{i}]"), segment);
        }
    }
    if let Some(signals) = export.raw_signals {
        known = true;
        for (i, signal) in signals.iter().enumerate() {
            let at = format!("rawSignals[{i}]");
            // Wi-Fi scans and activity records have no position: not entries, nothing to reject.
            if let Some(position) = signal.get("position") {
                let fix = latlng_string(position.get("LatLng").or(position.get("latLng")))
                    .zip(position.get("timestamp").and_then(time))
                    .map(|((lat, lon), tst)| {
                        let mut fix = Fix::at(tst, lat, lon);
                        fix.acc = round(position.get("accuracyMeters").and_then(Value::as_f64));
                        fix.alt = round(position.get("altitudeMeters").and_then(Value::as_f64));
                        fix.vel = round(
                            position.get("speedMetersPerSecond").and_then(Value::as_f64).map(|v| v * 3.6),
                        );
                        fix
                    });
                match fix {
                    Some(fix) => parsed.fix(|| at, fix),
                    None => parsed.reject(at, "a position without LatLng or timestamp"),
                }
            }
        }
    }
    if !known {
        return Err(FileError::new(
            "line 1",
            "not a Google location history (no locations, timelineObjects, semanticSegments or rawSignals)",
        ));
    }
    Ok(parsed)
}

fn raw_record(parsed: &mut Parsed, i: usize, record: &RawRecord) {
    let at = || format!("locations[{i}]");
    let (Some(lat), Some(lon)) = (record.latitude_e7, record.longitude_e7) else {
        return parsed.reject(at(), "no latitudeE7/longitudeE7");
    };
    let tst = match (&record.timestamp, &record.timestamp_ms) {
        (Some(iso), _) => timefmt::parse_iso(iso),
        (None, Some(ms)) => ms.trim().parse::<i64>().ok().map(|ms| ms / 1000),
        (None, None) => None,
    };
    let Some(tst) = tst else {
        return parsed.reject(at(), "no timestamp or timestampMs");
    };
    let mut fix = Fix::at(tst, e7(lat), e7(lon));
    fix.acc = round(record.accuracy);
    fix.alt = round(record.altitude);
    fix.vel = round(record.velocity.map(|v| v * 3.6));
    fix.cog = round(record.heading);
    parsed.fix(at, fix);
}

/// Degrees times 10^7, as Google writes them.
fn e7(value: i64) -> f64 {
    value as f64 / 1e7
}

fn e7_pair(value: &Value, lat: &str, lon: &str) -> Option<(f64, f64)> {
    Some((e7(value.get(lat)?.as_i64()?), e7(value.get(lon)?.as_i64()?)))
}

/// Semantic Location History: a visit is where one was from its start to its end; a journey
/// is its start, its recorded path, and its end.
fn timeline_object(parsed: &mut Parsed, at: &str, object: &Value) {
    let duration = |o: &Value| {
        let d = o.get("duration")?;
        let start = d.get("startTimestamp").or(d.get("startTimestampMs")).and_then(time)?;
        let end = d.get("endTimestamp").or(d.get("endTimestampMs")).and_then(time)?;
        Some((start, end))
    };
    if let Some(visit) = object.get("placeVisit") {
        let here = visit.get("location").and_then(|l| e7_pair(l, "latitudeE7", "longitudeE7"));
        let (Some((lat, lon)), Some((start, end))) = (here, duration(visit)) else {
            return parsed.reject(format!("{at}.placeVisit"), "no location or duration");
        };
        let name = visit.get("location").and_then(|l| l.get("name")).and_then(Value::as_str);
        for tst in [start, end] {
            let mut fix = Fix::at(tst, lat, lon);
            if let Some(name) = name {
                fix.extra.insert("poi".into(), name.into());
            }
            parsed.fix(|| format!("{at}.placeVisit"), fix);
        }
    } else if let Some(segment) = object.get("activitySegment") {
        let Some((start, end)) = duration(segment) else {
            return parsed.reject(format!("{at}.activitySegment"), "no duration");
        };
        let ends = [("startLocation", start), ("endLocation", end)];
        for (key, tst) in ends {
            if let Some((lat, lon)) = segment.get(key).and_then(|l| e7_pair(l, "latitudeE7", "longitudeE7")) {
                parsed.fix(|| format!("{at}.activitySegment.{key}"), Fix::at(tst, lat, lon));
            }
        }
        let points = segment.pointer("/simplifiedRawPath/points").and_then(Value::as_array);
        for (k, point) in points.map(Vec::as_slice).unwrap_or_default().iter().enumerate() {
            let here = || format!("{at}.activitySegment.simplifiedRawPath.points[{k}]");
            let tst = point.get("timestamp").or(point.get("timestampMs")).and_then(time);
            match (e7_pair(point, "latE7", "lngE7"), tst) {
                (Some((lat, lon)), Some(tst)) => {
                    let mut fix = Fix::at(tst, lat, lon);
                    fix.acc = round(point.get("accuracyMeters").and_then(Value::as_f64));
                    parsed.fix(here, fix);
                }
                _ => parsed.reject(here(), "no latE7/lngE7 or timestamp"),
            }
        }
    }
}

/// `"48.1234567°, 11.1234567°"` (Android) or `"geo:48.1234567,11.1234567"` (iOS).
fn latlng_string(value: Option<&Value>) -> Option<(f64, f64)> {
    let text = value?.as_str()?;
    let text = text.strip_prefix("geo:").unwrap_or(text);
    let (lat, lon) = text.split_once(',')?;
    let number = |s: &str| s.trim().trim_end_matches('°').trim().parse::<f64>().ok();
    Some((number(lat)?, number(lon)?))
}

/// Android's Timeline export: paths with a time per point, visits, and journeys' ends.
fn semantic_segment(parsed: &mut Parsed, at: &str, segment: &Value) {
    let start = segment.get("startTime").and_then(time);
    let end = segment.get("endTime").and_then(time);
    if let Some(path) = segment.get("timelinePath").and_then(Value::as_array) {
        for (k, point) in path.iter().enumerate() {
            let here = || format!("{at}.timelinePath[{k}]");
            match (latlng_string(point.get("point")), point.get("time").and_then(time)) {
                (Some((lat, lon)), Some(tst)) => parsed.fix(here, Fix::at(tst, lat, lon)),
                _ => parsed.reject(here(), "no point or time"),
            }
        }
    }
    let visit = segment.pointer("/visit/topCandidate/placeLocation/latLng");
    let activity = segment.get("activity");
    let places = match (visit, activity) {
        (Some(place), _) => vec![(latlng_string(Some(place)), start), (latlng_string(Some(place)), end)],
        (None, Some(activity)) => vec![
            (latlng_string(activity.pointer("/start/latLng")), start),
            (latlng_string(activity.pointer("/end/latLng")), end),
        ],
        (None, None) => return,
    };
    for (place, tst) in places {
        match (place, tst) {
            (Some((lat, lon)), Some(tst)) => parsed.fix(|| at.to_string(), Fix::at(tst, lat, lon)),
            _ => parsed.reject(at.to_string(), "a visit or activity without a position or time"),
        }
    }
}

/// The iOS Timeline export: segments whose path points are minutes after the start.
fn ios_segment(parsed: &mut Parsed, at: &str, segment: &Value) {
    let start = segment.get("startTime").and_then(time);
    let end = segment.get("endTime").and_then(time);
    let mut places = Vec::new();
    if let Some(place) = segment.pointer("/visit/topCandidate/placeLocation") {
        places.extend([(latlng_string(Some(place)), start), (latlng_string(Some(place)), end)]);
    }
    if let Some(activity) = segment.get("activity") {
        places.extend([
            (latlng_string(activity.get("start")), start),
            (latlng_string(activity.get("end")), end),
        ]);
    }
    for (place, tst) in places {
        match (place, tst) {
            (Some((lat, lon)), Some(tst)) => parsed.fix(|| at.to_string(), Fix::at(tst, lat, lon)),
            _ => parsed.reject(at.to_string(), "a visit or activity without a position or time"),
        }
    }
    let path = segment.get("timelinePath").and_then(Value::as_array);
    for (k, point) in path.map(Vec::as_slice).unwrap_or_default().iter().enumerate() {
        let here = || format!("{at}.timelinePath[{k}]");
        let offset = point.get("durationMinutesOffsetFromStartTime").and_then(time);
        match (latlng_string(point.get("point")), start.zip(offset)) {
            (Some((lat, lon)), Some((start, minutes))) => {
                parsed.fix(here, Fix::at(start + minutes * 60, lat, lon))
            }
            _ => parsed.reject(here(), "no point or time offset"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::Entry;
    use super::*;

    fn fixes(parsed: &Parsed) -> Vec<(i64, f64, f64)> {
        parsed
            .entries
            .iter()
            .filter_map(|e| if let Entry::Fix(f) = e { Some((f.tst, f.lat, f.lon)) } else { None })
            .collect()
    }

    #[test]
    fn records_json_old_and_new_timestamps() {
        let file = r#"{"locations": [
            {"latitudeE7": 488568260, "longitudeE7": 22927130, "accuracy": 20, "velocity": 10, "timestamp": "2024-02-02T06:44:58.123Z"},
            {"latitudeE7": 488568260, "longitudeE7": 22927130, "timestampMs": "1706856358000"},
            {"timestamp": "2024-02-02T06:44:58Z", "activity": []}
        ]}"#;
        let parsed = read(file.as_bytes()).unwrap();
        assert_eq!(fixes(&parsed), [(1706856298, 48.856826, 2.292713), (1706856358, 48.856826, 2.292713)]);
        let Entry::Fix(first) = &parsed.entries[0] else { panic!() };
        assert_eq!((first.acc, first.vel), (Some(20), Some(36)));
        assert_eq!(parsed.rejected[0].position, "locations[2]");
    }

    #[test]
    fn semantic_history_and_timeline_exports() {
        let semantic = r#"{"timelineObjects": [
            {"placeVisit": {"location": {"latitudeE7": 488500000, "longitudeE7": 22900000, "name": "Home"},
              "duration": {"startTimestamp": "2024-02-02T06:00:00Z", "endTimestamp": "2024-02-02T07:00:00Z"}}},
            {"activitySegment": {"startLocation": {"latitudeE7": 488500000, "longitudeE7": 22900000},
              "endLocation": {"latitudeE7": 488600000, "longitudeE7": 23000000},
              "duration": {"startTimestamp": "2024-02-02T07:00:00Z", "endTimestamp": "2024-02-02T07:20:00Z"},
              "simplifiedRawPath": {"points": [{"latE7": 488550000, "lngE7": 22950000, "timestamp": "2024-02-02T07:10:00Z"}]}}}
        ]}"#;
        let parsed = read(semantic.as_bytes()).unwrap();
        assert_eq!(parsed.entries.len(), 5);
        assert!(matches!(&parsed.entries[0], Entry::Fix(f) if f.extra["poi"] == "Home"));
        let android = r#"{"semanticSegments": [
            {"startTime": "2024-02-02T07:00:00.000+01:00", "endTime": "2024-02-02T08:00:00.000+01:00",
             "timelinePath": [{"point": "48.8500000°, 2.2900000°", "time": "2024-02-02T07:10:00.000+01:00"}]},
            {"startTime": "2024-02-02T08:00:00.000+01:00", "endTime": "2024-02-02T09:00:00.000+01:00",
             "visit": {"topCandidate": {"placeLocation": {"latLng": "48.86°, 2.30°"}}}}],
          "rawSignals": [{"position": {"LatLng": "48.87°, 2.31°", "accuracyMeters": 9, "timestamp": "2024-02-02T08:30:00.000+01:00"}},
                         {"wifiScan": {}}]}"#;
        let parsed = read(android.as_bytes()).unwrap();
        assert_eq!(
            fixes(&parsed),
            [
                (1706854200, 48.85, 2.29),
                (1706857200, 48.86, 2.30),
                (1706860800, 48.86, 2.30),
                (1706859000, 48.87, 2.31)
            ]
        );
        let ios = r#"[{"startTime": "2024-02-02T06:00:00Z", "endTime": "2024-02-02T06:30:00Z",
            "timelinePath": [{"point": "geo:48.85,2.29", "durationMinutesOffsetFromStartTime": "10"}]}]"#;
        assert_eq!(fixes(&read(ios.as_bytes()).unwrap()), [(1706853600 + 600, 48.85, 2.29)]);
        assert!(read(br#"{"something": []}"#).unwrap_err().message.contains("not a Google location history"));
    }
}
