//! History from elsewhere: GPX, GeoJSON, the Recorder's own `.rec` files and Google Takeout
//! location history, read into one device's history.
//!
//! A file is read whole before anything is written: a file that cannot be read (not the format,
//! broken XML or JSON, a `.rec` line that is not one) is refused with its position and nothing
//! of it is stored. Entries that can be read but are no position (no time, latitude out of
//! range) are left out and listed. What is left goes into the store in one transaction, as
//! locations the apps would have sent, so it is de-duplicated against what is stored (same
//! time and place) like any redelivery.

mod geojson;
mod gpx;
mod rec;
mod takeout;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::ingest::Recorder;
use crate::store::{Op, StoreError};
use crate::timefmt;
use crate::topic::Origin;

/// Operations per batch inside the import's transaction.
const BATCH: usize = 4096;

/// One position read from a file.
#[derive(Debug, Clone, PartialEq)]
pub struct Fix {
    pub tst: i64,
    pub lat: f64,
    pub lon: f64,
    /// Accuracy in metres.
    pub acc: Option<i64>,
    /// Altitude in metres.
    pub alt: Option<i64>,
    /// Speed in km/h, as the apps send it.
    pub vel: Option<i64>,
    /// Course over ground in degrees.
    pub cog: Option<i64>,
    /// Other fields of an OwnTracks location (GeoJSON properties that are such fields).
    pub extra: Map<String, Value>,
}

impl Fix {
    pub fn at(tst: i64, lat: f64, lon: f64) -> Fix {
        Fix { tst, lat, lon, acc: None, alt: None, vel: None, cog: None, extra: Map::new() }
    }

    /// The location message the app would have published.
    fn message(&self) -> Map<String, Value> {
        let mut object = self.extra.clone();
        object.insert("_type".into(), "location".into());
        object.insert("lat".into(), self.lat.into());
        object.insert("lon".into(), self.lon.into());
        object.insert("tst".into(), self.tst.into());
        for (key, value) in [("acc", self.acc), ("alt", self.alt), ("vel", self.vel), ("cog", self.cog)] {
            if let Some(value) = value {
                object.insert(key.into(), value.into());
            }
        }
        object
    }
}

/// What a file holds, entry by entry.
#[derive(Debug, Clone, PartialEq)]
pub enum Entry {
    Fix(Fix),
    /// A waypoint (GPX `wpt`): a named place.
    Waypoint {
        tst: i64,
        lat: f64,
        lon: f64,
        desc: String,
    },
    /// A message as the Recorder stored it (`.rec`): relative topic (`*` for the base topic),
    /// its time, and the payload.
    Message {
        reltopic: String,
        time: i64,
        payload: Vec<u8>,
    },
}

/// An entry left out, and why.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Rejected {
    /// Where in the file: `line 12`, `locations[3]`, ...
    pub position: String,
    pub reason: String,
}

/// A file read whole.
#[derive(Debug, Default)]
pub struct Parsed {
    pub entries: Vec<Entry>,
    pub rejected: Vec<Rejected>,
}

impl Parsed {
    /// Keeps `fix` if it is a position anywhere on Earth at a time after 1970.
    fn fix(&mut self, position: impl FnOnce() -> String, fix: Fix) {
        match check(fix.tst, fix.lat, fix.lon) {
            Ok(()) => self.entries.push(Entry::Fix(fix)),
            Err(reason) => self.reject(position(), reason),
        }
    }

    fn reject(&mut self, position: String, reason: impl Into<String>) {
        self.rejected.push(Rejected { position, reason: reason.into() });
    }
}

fn check(tst: i64, lat: f64, lon: f64) -> Result<(), String> {
    if !(-90.0..=90.0).contains(&lat) {
        return Err(format!("latitude {lat} out of range"));
    }
    if !(-180.0..=180.0).contains(&lon) {
        return Err(format!("longitude {lon} out of range"));
    }
    // Up to the year 9999: what the API's time formats can show.
    if !(1..=253_402_300_799).contains(&tst) {
        return Err(format!("time {tst} out of range"));
    }
    Ok(())
}

/// A file that cannot be imported at all.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{position}: {message}")]
pub struct FileError {
    pub position: String,
    pub message: String,
}

impl FileError {
    fn new(position: impl Into<String>, message: impl std::fmt::Display) -> FileError {
        FileError { position: position.into(), message: message.to_string() }
    }

    fn json(e: &serde_json::Error) -> FileError {
        FileError::new(format!("line {} column {}", e.line(), e.column()), e)
    }
}

/// The formats read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Gpx,
    GeoJson,
    Rec,
    /// Google Takeout: `Records.json`, Semantic Location History, or the newer Timeline export.
    Takeout,
}

impl Format {
    /// The format by name (`gpx`, `geojson`, `rec`, `takeout`).
    pub fn parse(name: &str) -> Option<Format> {
        match name.to_ascii_lowercase().as_str() {
            "gpx" => Some(Format::Gpx),
            "geojson" | "json+geo" => Some(Format::GeoJson),
            "rec" => Some(Format::Rec),
            "takeout" | "google" => Some(Format::Takeout),
            _ => None,
        }
    }

    /// The format a file is in, from its name and first bytes.
    pub fn detect(name: &str, bytes: &[u8]) -> Option<Format> {
        let lower = name.to_ascii_lowercase();
        if lower.ends_with(".gpx") {
            return Some(Format::Gpx);
        }
        if lower.ends_with(".rec") {
            return Some(Format::Rec);
        }
        if lower.ends_with(".geojson") {
            return Some(Format::GeoJson);
        }
        let start = std::str::from_utf8(&bytes[..bytes.len().min(4096)]).unwrap_or_default();
        let start = start.trim_start_matches('\u{feff}').trim_start();
        if start.starts_with('<') {
            return Some(Format::Gpx);
        }
        if start.starts_with('{') || start.starts_with('[') {
            let geo = ["\"FeatureCollection\"", "\"Feature\"", "\"Point\"", "\"LineString\""];
            return Some(if geo.iter().any(|k| start.contains(k)) {
                Format::GeoJson
            } else {
                Format::Takeout
            });
        }
        // `2024-02-02T06:44:58Z\t...`: the Recorder's line format.
        let line = start.lines().next().unwrap_or_default();
        line.split('\t').next().and_then(timefmt::parse_iso).map(|_| Format::Rec)
    }

    /// Reads a whole file of this format.
    pub fn read(self, bytes: &[u8]) -> Result<Parsed, FileError> {
        match self {
            Format::Gpx => gpx::read(bytes),
            Format::GeoJson => geojson::read(bytes),
            Format::Rec => rec::read(bytes),
            Format::Takeout => takeout::read(bytes),
        }
    }
}

/// What an import did.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Summary {
    /// Entries read from the files (stored, duplicates, not history, and rejected).
    pub read: usize,
    /// New records in the history.
    pub stored: usize,
    /// Records the store already had (or that came twice).
    pub duplicates: usize,
    pub rejected: Vec<Rejected>,
}

impl Recorder {
    /// Stores `entries` as `user`'s `device`'s history, in one transaction. `progress` is told
    /// how many entries have gone to the store so far.
    pub fn import(
        self: &Arc<Self>,
        user: &str,
        device: &str,
        parsed: Parsed,
        progress: impl Fn(usize) + Send + 'static,
    ) -> Result<Summary, StoreError> {
        let total = parsed.entries.len();
        let offered = Arc::new(AtomicUsize::new(0));
        let batches = Batches {
            recorder: Arc::clone(self),
            origin: Origin { user: user.to_string(), device: device.to_string(), reltopic: "*".into() },
            entries: parsed.entries.into_iter(),
            newest: None,
            done: 0,
            offered: Arc::clone(&offered),
            progress: Box::new(progress),
            now: timefmt::now(),
        };
        let stored = self.store().apply_all(Box::new(batches))?;
        let offered = offered.load(Ordering::Relaxed);
        Ok(Summary {
            read: total + parsed.rejected.len(),
            stored,
            duplicates: offered - stored,
            rejected: parsed.rejected,
        })
    }
}

/// The store operations of an import, made a batch at a time as the store writes them.
struct Batches {
    recorder: Arc<Recorder>,
    origin: Origin,
    entries: std::vec::IntoIter<Entry>,
    /// The newest last position seen: written once, at the end, not once per point.
    newest: Option<Op>,
    done: usize,
    /// History records handed to the store.
    offered: Arc<AtomicUsize>,
    progress: Box<dyn Fn(usize) + Send>,
    /// The time of receipt of what the file does not date.
    now: i64,
}

impl Iterator for Batches {
    type Item = Vec<Op>;

    fn next(&mut self) -> Option<Vec<Op>> {
        let mut ops = Vec::with_capacity(BATCH);
        for entry in self.entries.by_ref().take(BATCH) {
            self.done += 1;
            let (reltopic, time, payload) = match entry {
                Entry::Fix(fix) => ("*".to_string(), self.now, Ok(fix.message())),
                Entry::Waypoint { tst, lat, lon, desc } => {
                    let object = serde_json::json!({"_type": "waypoint", "tst": tst, "lat": lat, "lon": lon, "desc": desc});
                    ("waypoint".to_string(), self.now, Ok(object.as_object().cloned().unwrap_or_default()))
                }
                Entry::Message { reltopic, time, payload } => match serde_json::from_slice(&payload) {
                    Ok(Value::Object(object)) => (reltopic, time, Ok(object)),
                    _ => (reltopic, time, Err(payload)),
                },
            };
            let origin = Origin { reltopic, ..self.origin.clone() };
            for op in self.recorder.prepare_imported(origin, payload, time) {
                match op {
                    Op::Last { tst, .. } => {
                        if !matches!(&self.newest, Some(Op::Last { tst: newest, .. }) if *newest >= tst) {
                            self.newest = Some(op);
                        }
                    }
                    Op::Record(mut record) => {
                        // Imported twice is stored once, whatever the record.
                        record.dedup = true;
                        self.offered.fetch_add(1, Ordering::Relaxed);
                        ops.push(Op::Record(record));
                    }
                    op => ops.push(op),
                }
            }
        }
        if ops.is_empty() {
            return self.newest.take().map(|last| vec![last]);
        }
        (self.progress)(self.done);
        Some(ops)
    }
}

/// A time in any of the forms these files use: RFC 3339 with or without fractions and with
/// any offset, or epoch seconds or milliseconds as a number or string.
fn time(value: &Value) -> Option<i64> {
    match value {
        Value::Number(n) => n.as_f64().map(|t| if t > 1e11 { (t / 1000.0) as i64 } else { t as i64 }),
        Value::String(s) => s
            .trim()
            .parse::<f64>()
            .ok()
            .map(|t| if t > 1e11 { (t / 1000.0) as i64 } else { t as i64 })
            .or_else(|| timefmt::parse_iso(s)),
        _ => None,
    }
}

fn round(value: Option<f64>) -> Option<i64> {
    value.filter(|v| v.is_finite()).map(|v| v.round() as i64)
}
