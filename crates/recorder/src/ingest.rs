//! What the recorder does with each message the apps publish (or POST): the Recorder's
//! `handle_message`, producing store operations and live pushes.

use std::sync::{Arc, Mutex};

use serde_json::{Map, Value};
use tokio::sync::broadcast;
use tracing::{debug, warn};

use crate::store::{Op, Record, Store, StoreError};
use crate::topic::Origin;
use crate::tours::Reply;
use crate::{crypto, timefmt, view};

/// How a message arrived: over MQTT or POSTed in HTTP mode (stored with `_http: true`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    Mqtt,
    Http,
}

/// A location, transition or beacon as pushed to `/ws/last` clients.
#[derive(Debug, Clone)]
pub struct LiveEvent {
    pub user: String,
    pub device: String,
    pub json: String,
}

/// How the recorder treats what it stores.
#[derive(Clone)]
pub struct Settings {
    /// Add `addr`, `locality`, `cc` (offline, from a place list) and `ghash` to positions.
    pub addresses: bool,
    /// Where the recorder's HTTP side is reached from outside (`https://owntracks.example`):
    /// tours' links start with it.
    pub public_url: Option<String>,
    /// Street addresses from an HTTP geocoder, over the offline ones.
    pub geocoder: Option<Arc<crate::geocoder::Geocoder>>,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings { addresses: true, public_url: None, geocoder: None }
    }
}

/// Sends a message to a device (its `cmd` topic): the broker inside `serve`, the MQTT client
/// of a standalone recorder.
pub type Responder = Arc<dyn Fn(&str, &[u8]) + Send + Sync>;

/// The recorder: turns messages into store operations and keeps live clients informed.
pub struct Recorder {
    store: Arc<dyn Store>,
    settings: Settings,
    live: broadcast::Sender<Arc<LiveEvent>>,
    /// Epoch and topic of the last message handled (`/api/0/monitor`).
    monitor: Mutex<Option<(i64, String)>>,
    responder: std::sync::OnceLock<Responder>,
}

/// Operations and pushes worked out for a batch, before anything is written.
#[derive(Default)]
struct Prepared {
    ops: Vec<Op>,
    live: Vec<(Origin, Map<String, Value>)>,
    replies: Vec<Reply>,
    /// Geocoder answers of this batch by geohash, so a cell is asked once per batch too.
    geocoded: std::collections::HashMap<String, Option<crate::geocoder::Found>>,
}

impl Recorder {
    pub fn new(store: Arc<dyn Store>) -> Arc<Recorder> {
        Recorder::with_settings(store, Settings::default())
    }

    pub fn with_settings(store: Arc<dyn Store>, settings: Settings) -> Arc<Recorder> {
        let (live, _) = broadcast::channel(1024);
        Arc::new(Recorder { store, settings, live, monitor: Mutex::new(None), responder: Default::default() })
    }

    /// How answers to the devices' requests (tours) are sent; set once.
    pub fn set_responder(&self, responder: Responder) {
        let _ = self.responder.set(responder);
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// A feed of what is recorded from now on, for `/ws/last`.
    pub fn subscribe_live(&self) -> broadcast::Receiver<Arc<LiveEvent>> {
        self.live.subscribe()
    }

    /// `<epoch> <topic>` of the last message, as `/api/0/monitor` shows it.
    pub fn monitor(&self) -> Option<(i64, String)> {
        self.monitor.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Records a batch of `(topic, payload)` messages in one transaction. Returns how many new
    /// records were stored (duplicates and ignored messages are not counted). Answers to
    /// requests go to the devices through the responder.
    pub fn ingest<'a>(
        &self,
        messages: impl IntoIterator<Item = (&'a str, &'a [u8])>,
        via: Via,
    ) -> Result<usize, StoreError> {
        let (new, replies) = self.ingest_answering(messages, via)?;
        if let Some(respond) = self.responder.get() {
            for reply in replies {
                respond(&reply.topic, reply.payload.as_bytes());
            }
        }
        Ok(new)
    }

    /// [`Recorder::ingest`], returning the answers to requests instead of sending them (HTTP
    /// mode answers in the response).
    pub fn ingest_answering<'a>(
        &self,
        messages: impl IntoIterator<Item = (&'a str, &'a [u8])>,
        via: Via,
    ) -> Result<(usize, Vec<Reply>), StoreError> {
        let now = timefmt::now();
        let mut prepared = Prepared::default();
        let mut last_topic = None;
        for (topic, payload) in messages {
            // Zero-length payloads clear retained messages (user deletion): nothing to keep.
            if payload.is_empty() {
                continue;
            }
            let Some(origin) = Origin::parse(topic) else {
                debug!(topic, "not an OwnTracks topic (fewer than three levels): ignored");
                continue;
            };
            last_topic = Some(topic);
            match serde_json::from_slice::<Value>(payload) {
                Ok(Value::Object(object)) => self.prepare(origin, object, via, now, false, &mut prepared),
                _ => prepared.ops.push(Op::Record(other(&origin, None, now, payload.to_vec()))),
            }
        }
        if let Some(topic) = last_topic {
            *self.monitor.lock().unwrap_or_else(|p| p.into_inner()) = Some((now, topic.to_string()));
        }
        keep_newest_last(&mut prepared.ops);
        let new = match prepared.ops.is_empty() {
            true => 0,
            false => self.store.apply(&prepared.ops)?,
        };
        if self.live.receiver_count() > 0 {
            for (origin, object) in prepared.live {
                let card = self.store.card(&origin.user, &origin.device).ok().flatten();
                let json = view::live(&origin, object, card.as_deref());
                let _ =
                    self.live.send(Arc::new(LiveEvent { user: origin.user, device: origin.device, json }));
            }
        }
        Ok((new, prepared.replies))
    }

    fn prepare(
        &self,
        origin: Origin,
        mut object: Map<String, Value>,
        via: Via,
        now: i64,
        decrypted: bool,
        out: &mut Prepared,
    ) {
        // Demo data from the apps' showcase mode is not real history.
        if object.contains_key("_demo") {
            return;
        }
        if via == Via::Http {
            object.insert("_http".into(), Value::Bool(true));
        }
        let kind = object.get("_type").and_then(Value::as_str).unwrap_or_default().to_string();
        let (user, device) = (origin.user.clone(), origin.device.clone());
        match kind.as_str() {
            "encrypted" if !decrypted => match self.decrypt(&origin, &object) {
                Some(mut inner) => {
                    inner.insert("_decrypted".into(), Value::Bool(true));
                    self.prepare(origin, inner, via, now, true, out);
                }
                None => {
                    warn!(user, device, "encrypted payload without a matching key: kept encrypted");
                    out.ops.push(Op::Record(other(&origin, Some(kind), now, to_vec(&object))));
                }
            },
            "location" | "transition" | "waypoint" => {
                let Some((tst, lat, lon)) = normalise(&mut object) else {
                    warn!(user, device, kind, "without numeric tst/lat/lon: kept as an unknown record");
                    return out.ops.push(Op::Record(other(&origin, Some(kind), now, to_vec(&object))));
                };
                // Zone and address go into the record, so history keeps where it was.
                if !object.contains_key("tzname") {
                    if let Some(zone) = crate::zone::name(lat, lon) {
                        object.insert("tzname".into(), zone.into());
                    }
                }
                if self.settings.addresses {
                    add_address(&mut object, lat, lon);
                }
                if let Some(geocoder) = &self.settings.geocoder {
                    self.geocode(geocoder, &mut object, lat, lon, out);
                }
                let strings = |k| object.get(k).is_some_and(Value::is_string);
                if kind == "transition" && !(strings("event") && strings("desc")) {
                    warn!(user, device, "transition without string event/desc: dropped");
                    return;
                }
                let json = serde_json::to_string(&object).unwrap_or_default();
                if kind == "location" {
                    out.ops.push(Op::Last {
                        user: user.clone(),
                        device: device.clone(),
                        tst,
                        json: json.clone(),
                    });
                }
                // ping/ping is a health check: last position only, never history or live.
                if origin.is_ping() {
                    return;
                }
                out.ops.push(Op::Record(Record {
                    user,
                    device,
                    reltopic: origin.reltopic.clone(),
                    kind: Some(kind),
                    tst,
                    rcv: now,
                    lat: Some(lat),
                    lon: Some(lon),
                    payload: json.into_bytes(),
                    dedup: true,
                }));
                out.live.push((origin, object));
            }
            // Answered, not kept (the Recorder keeps no requests either).
            "request" => {
                match crate::tours::request(
                    self.store.as_ref(),
                    &origin,
                    &object,
                    now,
                    self.settings.public_url.as_deref(),
                ) {
                    Ok(handled) => {
                        out.ops.extend(handled.ops);
                        out.replies.extend(handled.reply);
                    }
                    Err(e) => warn!(user, device, "request not answered: {e}"),
                }
            }
            "card" => out.ops.push(Op::Card { user, device, json: to_string(&object) }),
            "waypoints" => out.ops.push(Op::Waypoints { user, device, json: to_string(&object) }),
            "dump" if object.contains_key("configuration") => {
                out.ops.push(Op::Config { user, device, json: to_string(&object) })
            }
            _ => {
                let reltopic = if kind == "lwt" { "lwt".to_string() } else { origin.reltopic.clone() };
                let record = Record { reltopic, ..other(&origin, Some(kind.clone()), now, to_vec(&object)) };
                out.ops.push(Op::Record(record));
                if kind == "beacon" {
                    out.live.push((origin, object));
                }
            }
        }
    }

    /// The store operations for one imported message received at `time`: as if it had
    /// arrived then over MQTT, but nothing pushed live and nothing decrypted (an import holds
    /// what its owner had already).
    pub(crate) fn prepare_imported(
        &self,
        origin: Origin,
        payload: Result<Map<String, Value>, Vec<u8>>,
        time: i64,
    ) -> Vec<Op> {
        let mut prepared = Prepared::default();
        match payload {
            // A request was answered when it was made: importing it asks nothing again.
            Ok(object) if object.get("_type").and_then(Value::as_str) == Some("request") => {}
            Ok(object) => self.prepare(origin, object, Via::Mqtt, time, true, &mut prepared),
            Err(raw) => prepared.ops.push(Op::Record(other(&origin, None, time, raw))),
        }
        prepared.ops
    }

    /// A street address from the geocoder: kept by geohash, asked only for a cell never seen.
    fn geocode(
        &self,
        geocoder: &crate::geocoder::Geocoder,
        object: &mut Map<String, Value>,
        lat: f64,
        lon: f64,
        out: &mut Prepared,
    ) {
        let Some(ghash) = crate::geo::ghash(lat, lon) else { return };
        let found = match out.geocoded.get(&ghash) {
            Some(found) => found.clone(),
            None => {
                let kept =
                    self.store.geocache(&ghash).ok().flatten().and_then(|j| serde_json::from_str(&j).ok());
                let found = kept.or_else(|| {
                    let found = geocoder.lookup(lat, lon)?;
                    let json = serde_json::to_string(&found).ok()?;
                    out.ops.push(Op::Geocache { ghash: ghash.clone(), json });
                    Some(found)
                });
                out.geocoded.insert(ghash, found.clone());
                found
            }
        };
        if let Some(found) = found {
            object.insert("addr".into(), found.addr.into());
            for (key, value) in [("locality", found.locality), ("cc", found.cc)] {
                if let Some(value) = value {
                    object.insert(key.into(), value.into());
                }
            }
        }
    }

    /// Opens an `encrypted` message with the device's key.
    fn decrypt(&self, origin: &Origin, object: &Map<String, Value>) -> Option<Map<String, Value>> {
        let secret = self.store.key(&origin.user, &origin.device).ok().flatten()?;
        let plain = crypto::decrypt(&secret, object.get("data")?.as_str()?)?;
        match serde_json::from_slice(&plain).ok()? {
            Value::Object(inner) => Some(inner),
            _ => None,
        }
    }
}

/// `ghash`, and `addr`, `locality`, `cc` when a place is near, unless the message has them.
fn add_address(object: &mut Map<String, Value>, lat: f64, lon: f64) {
    let Some(address) = crate::geo::address(lat, lon) else { return };
    let fields = [
        ("ghash", Some(address.ghash)),
        ("addr", address.addr),
        ("locality", address.locality),
        ("cc", address.cc),
    ];
    for (key, value) in fields {
        if let Some(value) = value {
            object.entry(key).or_insert(value.into());
        }
    }
}

/// Leaves one last position per device in a batch, the one the store would end with (the
/// first of the newest: a later one of the same time does not replace it), so a busy
/// device's batch writes it once, not once per point.
fn keep_newest_last(ops: &mut Vec<Op>) {
    let mut newest: std::collections::HashMap<(&str, &str), (i64, usize)> = std::collections::HashMap::new();
    for (i, op) in ops.iter().enumerate() {
        if let Op::Last { user, device, tst, .. } = op {
            let entry = newest.entry((user.as_str(), device.as_str())).or_insert((*tst, i));
            if *tst > entry.0 {
                *entry = (*tst, i);
            }
        }
    }
    let keep: std::collections::HashSet<usize> = newest.into_values().map(|(_, i)| i).collect();
    let mut i = 0;
    ops.retain(|op| {
        i += 1;
        !matches!(op, Op::Last { .. }) || keep.contains(&(i - 1))
    });
}

/// A record kept as it came, stamped with the time of receipt.
fn other(origin: &Origin, kind: Option<String>, now: i64, payload: Vec<u8>) -> Record {
    Record {
        user: origin.user.clone(),
        device: origin.device.clone(),
        reltopic: origin.reltopic.clone(),
        kind,
        tst: now,
        rcv: now,
        lat: None,
        lon: None,
        payload,
        dedup: false,
    }
}

fn to_string(object: &Map<String, Value>) -> String {
    serde_json::to_string(object).unwrap_or_default()
}

fn to_vec(object: &Map<String, Value>) -> Vec<u8> {
    to_string(object).into_bytes()
}

/// Makes `tst`, `lat`, `lon` and `acc` numbers (some clients send strings) and returns the
/// first three, or `None` if any of them is missing or not a number.
fn normalise(object: &mut Map<String, Value>) -> Option<(i64, f64, f64)> {
    for key in ["tst", "lat", "lon", "acc"] {
        if let Some(Value::String(text)) = object.get(key) {
            let number = match key {
                "tst" | "acc" => text.trim().parse::<i64>().ok().map(Value::from),
                _ => text.trim().parse::<f64>().ok().map(Value::from),
            };
            if let Some(number) = number {
                object.insert(key.into(), number);
            }
        }
    }
    let tst = object.get("tst")?.as_f64()? as i64;
    Some((tst, object.get("lat")?.as_f64()?, object.get("lon")?.as_f64()?))
}
