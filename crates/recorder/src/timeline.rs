//! A device's day as a timeline: stays (where it stayed at least ten minutes, named after the
//! region it was in or the place nearest) and the trips between them (with their distance).
//! Neither the Recorder nor owntracks/frontend has one.

use serde::Serialize;
use serde_json::{Map, Value};

use crate::geo::distance_m;

/// Positions this close to a stay's first one are still that stay.
const STAY_RADIUS_M: f64 = 150.0;
/// Shorter than this, a pause is part of the trip (traffic lights, a shop).
const MIN_STAY_S: i64 = 600;

/// A region of the device (a waypoint with a radius): a stay inside it takes its name.
#[derive(Debug, Clone, PartialEq)]
pub struct Region {
    pub desc: String,
    pub lat: f64,
    pub lon: f64,
    pub rad: f64,
}

impl Region {
    /// The regions of a waypoints export (`{"waypoints": [...]}`): those with a radius.
    pub fn from_export(json: &str) -> Vec<Region> {
        let Ok(export) = serde_json::from_str::<Value>(json) else { return Vec::new() };
        let waypoints =
            export.get("waypoints").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
        waypoints
            .iter()
            .filter_map(|w| {
                Some(Region {
                    desc: w.get("desc")?.as_str()?.to_string(),
                    lat: w.get("lat")?.as_f64()?,
                    lon: w.get("lon")?.as_f64()?,
                    rad: w.get("rad")?.as_f64().filter(|r| *r > 0.0)?,
                })
            })
            .collect()
    }
}

/// A position of the day, with the place the recorder found for it.
#[derive(Debug, Clone, PartialEq)]
pub struct Fix {
    pub tst: i64,
    pub lat: f64,
    pub lon: f64,
    pub locality: Option<String>,
}

impl Fix {
    /// From a stored location's JSON.
    pub fn from_location(object: &Map<String, Value>) -> Option<Fix> {
        Some(Fix {
            tst: object.get("tst")?.as_i64()?,
            lat: object.get("lat")?.as_f64()?,
            lon: object.get("lon")?.as_f64()?,
            locality: object.get("locality").and_then(Value::as_str).map(str::to_string),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Span {
    Stay { from: i64, to: i64, lat: f64, lon: f64, place: Option<String>, points: usize },
    Trip { from: i64, to: i64, distance: u64, points: usize },
}

/// The stays and trips of `fixes` (oldest first).
pub fn timeline(fixes: &[Fix], regions: &[Region]) -> Vec<Span> {
    let mut spans = Vec::new();
    // The trip under way: its points so far, starting where the last stay ended.
    let mut trip: Vec<&Fix> = Vec::new();
    let mut i = 0;
    while i < fixes.len() {
        let anchor = &fixes[i];
        let mut end = i;
        while end + 1 < fixes.len() && distance(anchor, &fixes[end + 1]) <= STAY_RADIUS_M {
            end += 1;
        }
        if fixes[end].tst - anchor.tst < MIN_STAY_S {
            trip.push(anchor);
            i += 1;
            continue;
        }
        let stay = &fixes[i..=end];
        // The trip here ends where this stay begins.
        if !trip.is_empty() {
            trip.push(anchor);
            spans.push(trip_span(&trip));
        }
        spans.push(stay_span(stay, regions));
        trip = vec![&fixes[end]];
        i = end + 1;
    }
    if trip.len() > 1 {
        spans.push(trip_span(&trip));
    }
    spans
}

fn distance(a: &Fix, b: &Fix) -> f64 {
    distance_m((a.lat, a.lon), (b.lat, b.lon))
}

fn trip_span(points: &[&Fix]) -> Span {
    let metres: f64 = points.windows(2).map(|w| distance(w[0], w[1])).sum();
    Span::Trip {
        from: points[0].tst,
        to: points[points.len() - 1].tst,
        distance: metres.round() as u64,
        points: points.len(),
    }
}

fn stay_span(points: &[Fix], regions: &[Region]) -> Span {
    let n = points.len() as f64;
    let (lat, lon) =
        (points.iter().map(|p| p.lat).sum::<f64>() / n, points.iter().map(|p| p.lon).sum::<f64>() / n);
    // The smallest region around it, else the place named most often.
    let region = regions
        .iter()
        .filter(|r| distance_m((lat, lon), (r.lat, r.lon)) <= r.rad)
        .min_by(|a, b| a.rad.total_cmp(&b.rad))
        .map(|r| r.desc.clone());
    let place = region.or_else(|| {
        let mut counts: Vec<(&str, usize)> = Vec::new();
        for name in points.iter().filter_map(|p| p.locality.as_deref()) {
            match counts.iter_mut().find(|(n, _)| *n == name) {
                Some((_, count)) => *count += 1,
                None => counts.push((name, 1)),
            }
        }
        counts.into_iter().max_by_key(|(_, count)| *count).map(|(name, _)| name.to_string())
    });
    let round = |v: f64| (v * 1e6).round() / 1e6;
    Span::Stay {
        from: points[0].tst,
        to: points[points.len() - 1].tst,
        lat: round(lat),
        lon: round(lon),
        place,
        points: points.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(tst: i64, lat: f64, lon: f64, locality: &str) -> Fix {
        Fix { tst, lat, lon, locality: Some(locality.into()) }
    }

    #[test]
    fn a_day_at_home_a_trip_and_work() {
        let home = Region { desc: "Home".into(), lat: 48.8500, lon: 2.2900, rad: 100.0 };
        let day = [
            at(0, 48.8500, 2.2900, "Vanves"),
            at(1800, 48.8501, 2.2901, "Vanves"),
            at(3600, 48.8502, 2.2900, "Vanves"),
            // Off to work: about 1.1 km and 1.1 km.
            at(3900, 48.8600, 2.2900, "Paris"),
            at(4200, 48.8700, 2.2900, "Levallois-Perret"),
            // A traffic light: 2 minutes is no stay.
            at(4320, 48.8701, 2.2901, "Levallois-Perret"),
            at(4500, 48.8800, 2.2900, "Clichy"),
            at(6000, 48.8801, 2.2901, "Clichy"),
            at(9000, 48.8800, 2.2902, "Clichy"),
        ];
        let spans = timeline(&day, &[home]);
        assert_eq!(spans.len(), 3, "{spans:?}");
        assert!(
            matches!(&spans[0], Span::Stay { from: 0, to: 3600, place: Some(p), points: 3, .. } if p == "Home")
        );
        let Span::Trip { from, to, distance, points } = spans[1] else { panic!("{spans:?}") };
        assert_eq!((from, to, points), (3600, 4500, 5));
        assert!((3200..3400).contains(&distance), "{distance} m");
        assert!(
            matches!(&spans[2], Span::Stay { from: 4500, to: 9000, place: Some(p), .. } if p == "Clichy")
        );
    }

    #[test]
    fn moving_all_day_is_one_trip_and_no_points_nothing() {
        let moving: Vec<Fix> = (0..5).map(|i| at(i * 60, 48.0 + i as f64 * 0.01, 2.0, "x")).collect();
        assert!(matches!(timeline(&moving, &[]).as_slice(), [Span::Trip { points: 5, .. }]));
        assert!(timeline(&[], &[]).is_empty());
        let export = r#"{"_type":"waypoints","waypoints":[{"desc":"Home","lat":1,"lon":2,"rad":50},{"desc":"Pin","lat":1,"lon":2}]}"#;
        assert_eq!(
            Region::from_export(export),
            [Region { desc: "Home".into(), lat: 1.0, lon: 2.0, rad: 50.0 }]
        );
    }
}
