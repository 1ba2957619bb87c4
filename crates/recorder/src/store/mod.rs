//! Where the recorder keeps what it receives. [`Store`] is the seam: SQLite ([`sqlite`]) is the
//! embedded default; PostgreSQL ([`postgres`]) is the store several machines share.

pub mod postgres;
pub mod sqlite;

use std::path::Path;
use std::sync::Arc;

pub use self::postgres::PostgresStore;
pub use sqlite::SqliteStore;

/// The store file inside the data directory.
pub const STORE_FILE: &str = "recorder.sqlite";

/// Opens the store `url` names (`postgres://…` or `postgresql://…`), or without one the SQLite
/// file in `data_dir`; returns it with a name for logs (no password in it).
pub fn open(url: Option<&str>, data_dir: &Path) -> Result<(Arc<dyn Store>, String)> {
    match url {
        Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
            Ok((Arc::new(PostgresStore::open(url)?), postgres::redacted(url)))
        }
        Some(url) => Err(StoreError::Open {
            what: postgres::redacted(url),
            cause: "not a store URL: expected postgres://user@host/database".into(),
        }),
        None => {
            std::fs::create_dir_all(data_dir).map_err(|e| StoreError::Open {
                what: format!("data directory {}", data_dir.display()),
                cause: Box::new(e),
            })?;
            let path = data_dir.join(STORE_FILE);
            Ok((Arc::new(SqliteStore::open(&path)?), path.display().to_string()))
        }
    }
}

/// One message worth keeping in the history (the Recorder's `.rec` line).
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub user: String,
    pub device: String,
    /// `*` for the base topic, `lwt`, `event`, `status`, ...
    pub reltopic: String,
    /// The `_type`, or `None` for a payload that is not a JSON object.
    pub kind: Option<String>,
    /// The fix time for location, transition and waypoint; the receipt time otherwise.
    pub tst: i64,
    /// When it was received.
    pub rcv: i64,
    pub lat: Option<f64>,
    pub lon: Option<f64>,
    /// The JSON as received (plus `_http` / `_decrypted`), or the raw bytes.
    pub payload: Vec<u8>,
    /// A second copy (same user, device, type, time and place) is dropped: redeliveries and
    /// HTTP retries are stored once. A record without a place is a copy only when its topic and
    /// payload are the same too (imports set it there; live messages without a place are all
    /// kept).
    pub dedup: bool,
}

/// A change to the store; a batch of them is applied in one transaction.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    Record(Record),
    /// The device's last position; kept only if `tst` is newer than the one stored.
    Last {
        user: String,
        device: String,
        tst: i64,
        json: String,
    },
    Card {
        user: String,
        device: String,
        json: String,
    },
    /// A full waypoints export (`.otrw`).
    Waypoints {
        user: String,
        device: String,
        json: String,
    },
    /// A configuration dump (`.otrc`; holds secrets).
    Config {
        user: String,
        device: String,
        json: String,
    },
    /// A tour the device asked for (`_type: request`, `request: tour`).
    Tour(Tour),
    /// A geocoder's answer for a geohash cell (kept for good, as the Recorder keeps its cache).
    Geocache {
        ghash: String,
        json: String,
    },
    /// The device's tour `uuid` withdrawn (`request: untour`).
    Untour {
        user: String,
        device: String,
        uuid: String,
    },
}

/// A shared, read-only view of one device's track between two times, at `/view/<uuid>`.
#[derive(Debug, Clone, PartialEq)]
pub struct Tour {
    pub uuid: String,
    pub user: String,
    pub device: String,
    pub from: i64,
    pub to: i64,
    /// After this the view is gone.
    pub expires: i64,
    /// The tour as the app sent it, with its `uuid` and `url`: what `tours` answers.
    pub json: String,
}

/// A stored location, as the `locations` query returns it.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub tst: i64,
    pub rcv: i64,
    pub json: String,
}

/// Any stored record, as the Recorder's `.rec` line has it.
#[derive(Debug, Clone, PartialEq)]
pub struct RawRecord {
    pub tst: i64,
    pub reltopic: String,
    pub payload: Vec<u8>,
}

/// A device's last position.
#[derive(Debug, Clone, PartialEq)]
pub struct Last {
    pub user: String,
    pub device: String,
    pub json: String,
}

/// Which locations of one device: `from < tst < to` (the Recorder's exclusive bounds), and
/// with `limit` only the newest that many.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Range {
    pub from: i64,
    pub to: i64,
    pub limit: Option<usize>,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("store: {0}")]
    Postgres(#[from] ::postgres::Error),
    /// (`cause`, not `source`: the message already says it, and error chains would repeat it.)
    #[error("store {what}: {cause}")]
    Open { what: String, cause: Box<dyn std::error::Error + Send + Sync> },
    #[error("store closed")]
    Closed,
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// Batches of operations for one transaction (an import: all of it or nothing), made as the
/// store asks for them.
pub type Batches = Box<dyn Iterator<Item = Vec<Op>> + Send>;

/// The recorder's storage. Implementations must be safe to call from many threads; calls
/// block, so async callers run them on the blocking pool.
pub trait Store: Send + Sync + 'static {
    /// Applies a batch atomically; returns how many records were new (not duplicates).
    fn apply(&self, ops: &[Op]) -> Result<usize>;
    /// Applies every batch in one transaction; returns how many records were new.
    fn apply_all(&self, batches: Batches) -> Result<usize>;
    /// Users with any data, sorted.
    fn users(&self) -> Result<Vec<String>>;
    /// A user's devices, sorted.
    fn devices(&self, user: &str) -> Result<Vec<String>>;
    /// The months (`YYYY-MM`) a device has records in, sorted.
    fn months(&self, user: &str, device: &str) -> Result<Vec<String>>;
    /// Every device's last position.
    fn last(&self) -> Result<Vec<Last>>;
    /// A device's locations in `range`, oldest first.
    fn locations(&self, user: &str, device: &str, range: Range) -> Result<Vec<Point>>;
    /// Every record of a device (all types) with `from < tst < to`, oldest first.
    fn records(&self, user: &str, device: &str, from: i64, to: i64) -> Result<Vec<RawRecord>>;
    fn card(&self, user: &str, device: &str) -> Result<Option<String>>;
    /// Any card of the user (the `photo` endpoint is per user).
    fn user_card(&self, user: &str) -> Result<Option<String>>;
    /// The device's last waypoints export (`.otrw`).
    fn waypoints(&self, user: &str, device: &str) -> Result<Option<String>>;
    /// The device's last configuration dump (`.otrc`).
    fn configuration(&self, user: &str, device: &str) -> Result<Option<String>>;
    fn key(&self, user: &str, device: &str) -> Result<Option<String>>;
    /// Every device's secret: `(user, device, secret)`, sorted (ocat's `--dump=keys`).
    fn keys(&self) -> Result<Vec<(String, String, String)>>;
    /// Sets (`Some`) or removes (`None`) a device's encryption secret; true if something changed.
    fn set_key(&self, user: &str, device: &str, secret: Option<&str>) -> Result<bool>;
    /// Friends set by hand for a device (`user/device` names); `None` if never set.
    fn friends(&self, user: &str, device: &str) -> Result<Option<Vec<String>>>;
    fn set_friends(&self, user: &str, device: &str, friends: Option<&[String]>) -> Result<()>;
    /// Every hand-set friends list: `(user, device, friends)`, sorted (`--dump=friends`).
    fn all_friends(&self) -> Result<Vec<(String, String, Vec<String>)>>;
    /// The device's tours that have not expired at `now`, oldest first.
    fn tours(&self, user: &str, device: &str, now: i64) -> Result<Vec<Tour>>;
    /// The geocoder's answer kept for a geohash cell.
    fn geocache(&self, ghash: &str) -> Result<Option<String>>;
    /// Every kept answer: `(ghash, json)`, sorted (`--dump ghash`).
    fn geocache_all(&self) -> Result<Vec<(String, String)>>;
    /// Removes a kept answer (`--load ghash` with `DELETE`); true if there was one.
    fn forget_geocache(&self, ghash: &str) -> Result<bool>;
    /// The tour `uuid`, expired or not.
    fn tour(&self, uuid: &str) -> Result<Option<Tour>>;
    /// Deletes a device's locations with `from <= tst <= to`; the last position falls back to
    /// the newest one left. Returns how many went.
    fn delete_locations(&self, user: &str, device: &str, from: i64, to: i64) -> Result<usize>;
    /// Deletes everything of a device (history, last, card, waypoints, configuration, key, tours).
    fn delete_device(&self, user: &str, device: &str) -> Result<usize>;
    /// Deletes history older than `tst` (retention); the last positions stay.
    fn purge_before(&self, tst: i64) -> Result<usize>;
}
