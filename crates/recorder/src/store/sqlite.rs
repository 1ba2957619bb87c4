//! The embedded store: one SQLite file in WAL mode. One connection writes (batches in one
//! transaction each), another reads, so API queries never wait behind ingest.

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{params, Connection, OptionalExtension};

use super::{Batches, Last, Op, Point, Range, RawRecord, Record, Result, Store, StoreError, Tour};

/// Schema changes, applied in order; `PRAGMA user_version` is how many have run. Append only.
const MIGRATIONS: &[&str] = &[
    // 1: history, last positions, cards, keys, friends, waypoints, configuration dumps.
    "CREATE TABLE records (
        id INTEGER PRIMARY KEY,
        user TEXT NOT NULL,
        device TEXT NOT NULL,
        reltopic TEXT NOT NULL,
        type TEXT,
        tst INTEGER NOT NULL,
        rcv INTEGER NOT NULL,
        lat REAL,
        lon REAL,
        payload BLOB NOT NULL,
        dedup INTEGER NOT NULL
    );
    -- A device's points in time order: the `locations` query and the month list.
    CREATE INDEX records_by_time ON records(user, device, type, tst);
    CREATE UNIQUE INDEX records_once ON records(user, device, type, tst, lat, lon) WHERE dedup = 1;
    CREATE INDEX records_by_age ON records(tst);
    CREATE TABLE last (user TEXT NOT NULL, device TEXT NOT NULL, tst INTEGER NOT NULL,
        json TEXT NOT NULL, PRIMARY KEY (user, device));
    CREATE TABLE cards (user TEXT NOT NULL, device TEXT NOT NULL, json TEXT NOT NULL,
        PRIMARY KEY (user, device));
    CREATE TABLE keys (user TEXT NOT NULL, device TEXT NOT NULL, secret TEXT NOT NULL,
        PRIMARY KEY (user, device));
    CREATE TABLE friends (user TEXT NOT NULL, device TEXT NOT NULL, friends TEXT NOT NULL,
        PRIMARY KEY (user, device));
    CREATE TABLE waypoints (user TEXT NOT NULL, device TEXT NOT NULL, json TEXT NOT NULL,
        PRIMARY KEY (user, device));
    CREATE TABLE configs (user TEXT NOT NULL, device TEXT NOT NULL, json TEXT NOT NULL,
        PRIMARY KEY (user, device));",
    // 2: tours, the shared views of a device's track.
    "CREATE TABLE tours (uuid TEXT PRIMARY KEY, user TEXT NOT NULL, device TEXT NOT NULL,
        from_tst INTEGER NOT NULL, to_tst INTEGER NOT NULL, expires INTEGER NOT NULL, json TEXT NOT NULL);
    CREATE INDEX tours_by_device ON tours(user, device);",
    // 3: a geocoder's answers by geohash.
    "CREATE TABLE geocache (ghash TEXT PRIMARY KEY, json TEXT NOT NULL);",
];

pub struct SqliteStore {
    writer: Mutex<Connection>,
    reader: Mutex<Connection>,
}

macro_rules! lock {
    ($m:expr) => {
        $m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    };
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and brings its schema up to date.
    pub fn open(path: &Path) -> Result<SqliteStore> {
        let open = |path: &Path| -> Result<Connection> {
            let named =
                |source| StoreError::Open { what: path.display().to_string(), cause: Box::new(source) };
            let conn = Connection::open(path).map_err(named)?;
            conn.busy_timeout(std::time::Duration::from_secs(10)).map_err(named)?;
            // WAL: readers never block the writer. NORMAL: a power cut can lose the last
            // transactions but never corrupts the file.
            conn.pragma_update(None, "journal_mode", "WAL").map_err(named)?;
            conn.pragma_update(None, "synchronous", "NORMAL").map_err(named)?;
            Ok(conn)
        };
        let mut writer = open(path)?;
        migrate(&mut writer)?;
        let reader = open(path)?;
        Ok(SqliteStore { writer: Mutex::new(writer), reader: Mutex::new(reader) })
    }

    fn read<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T> {
        Ok(f(&lock!(self.reader))?)
    }

    /// One row of a per-device JSON table.
    fn json(&self, table: &str, user: &str, device: &str) -> Result<Option<String>> {
        self.read(|c| {
            c.prepare_cached(&format!("SELECT json FROM {table} WHERE user = ?1 AND device = ?2"))?
                .query_row([user, device], |row| row.get(0))
                .optional()
        })
    }

    fn write<T>(&self, f: impl FnOnce(&rusqlite::Transaction) -> rusqlite::Result<T>) -> Result<T> {
        let mut conn = lock!(self.writer);
        let tx = conn.transaction()?;
        let out = f(&tx)?;
        tx.commit()?;
        Ok(out)
    }
}

fn migrate(conn: &mut Connection) -> Result<()> {
    let done: usize = conn.pragma_query_value(None, "user_version", |row| row.get(0))?;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(done) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", i + 1)?;
        tx.commit()?;
    }
    Ok(())
}

fn insert_record(tx: &rusqlite::Transaction, r: &Record) -> rusqlite::Result<usize> {
    if r.dedup && r.lat.is_none() {
        // No place for the unique index to compare: the same message at the same time is the copy.
        let copy = "SELECT 1 FROM records WHERE user = ?1 AND device = ?2 AND type IS ?3 AND tst = ?4
                    AND reltopic = ?5 AND payload = ?6";
        let seen = tx
            .prepare_cached(copy)?
            .exists(params![r.user, r.device, r.kind, r.tst, r.reltopic, r.payload])?;
        if seen {
            return Ok(0);
        }
    }
    let mut stmt = tx.prepare_cached(
        "INSERT OR IGNORE INTO records (user, device, reltopic, type, tst, rcv, lat, lon, payload, dedup)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?;
    stmt.execute(params![
        r.user, r.device, r.reltopic, r.kind, r.tst, r.rcv, r.lat, r.lon, r.payload, r.dedup
    ])
}

/// Upsert into one of the per-device JSON tables.
fn put_json(
    tx: &rusqlite::Transaction,
    table: &str,
    user: &str,
    device: &str,
    json: &str,
) -> rusqlite::Result<()> {
    let sql = format!("INSERT OR REPLACE INTO {table} (user, device, json) VALUES (?1, ?2, ?3)");
    tx.prepare_cached(&sql)?.execute(params![user, device, json])?;
    Ok(())
}

/// Sets the last position to the newest stored location, or removes it if none is left.
fn refresh_last(tx: &rusqlite::Transaction, user: &str, device: &str) -> rusqlite::Result<()> {
    let newest: Option<(i64, Vec<u8>)> = tx
        .query_row(
            "SELECT tst, payload FROM records WHERE user = ?1 AND device = ?2 AND type = 'location'
             AND lat IS NOT NULL ORDER BY tst DESC, id DESC LIMIT 1",
            params![user, device],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .optional()?;
    match newest {
        Some((tst, json)) => tx.execute(
            "INSERT OR REPLACE INTO last (user, device, tst, json) VALUES (?1, ?2, ?3, ?4)",
            params![user, device, tst, String::from_utf8_lossy(&json)],
        )?,
        None => tx.execute("DELETE FROM last WHERE user = ?1 AND device = ?2", params![user, device])?,
    };
    Ok(())
}

/// One batch's operations inside the transaction `tx`; returns how many records were new.
fn apply_batch(tx: &rusqlite::Transaction, ops: &[Op]) -> rusqlite::Result<usize> {
    let mut new = 0;
    for op in ops {
        match op {
            Op::Record(record) => new += insert_record(tx, record)?,
            Op::Last { user, device, tst, json } => {
                // Only forward in time: a late redelivery does not move the device back.
                tx.prepare_cached(
                    "INSERT INTO last (user, device, tst, json) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (user, device) DO UPDATE SET tst = excluded.tst, json = excluded.json
                     WHERE excluded.tst > last.tst",
                )?
                .execute(params![user, device, tst, json])?;
            }
            Op::Card { user, device, json } => put_json(tx, "cards", user, device, json)?,
            Op::Waypoints { user, device, json } => put_json(tx, "waypoints", user, device, json)?,
            Op::Config { user, device, json } => put_json(tx, "configs", user, device, json)?,
            Op::Tour(t) => {
                tx.prepare_cached(
                    "INSERT OR REPLACE INTO tours (uuid, user, device, from_tst, to_tst, expires, json)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )?
                .execute(params![t.uuid, t.user, t.device, t.from, t.to, t.expires, t.json])?;
            }
            Op::Geocache { ghash, json } => {
                tx.prepare_cached("INSERT OR REPLACE INTO geocache (ghash, json) VALUES (?1, ?2)")?
                    .execute(params![ghash, json])?;
            }
            Op::Untour { user, device, uuid } => {
                tx.prepare_cached("DELETE FROM tours WHERE uuid = ?1 AND user = ?2 AND device = ?3")?
                    .execute(params![uuid, user, device])?;
            }
        }
    }
    Ok(new)
}

fn tour_row(row: &rusqlite::Row) -> rusqlite::Result<Tour> {
    Ok(Tour {
        uuid: row.get(0)?,
        user: row.get(1)?,
        device: row.get(2)?,
        from: row.get(3)?,
        to: row.get(4)?,
        expires: row.get(5)?,
        json: row.get(6)?,
    })
}

impl Store for SqliteStore {
    fn apply(&self, ops: &[Op]) -> Result<usize> {
        self.write(|tx| apply_batch(tx, ops))
    }

    fn apply_all(&self, batches: Batches) -> Result<usize> {
        self.write(|tx| batches.map(|ops| apply_batch(tx, &ops)).sum())
    }

    fn users(&self) -> Result<Vec<String>> {
        // Distinct users by hopping the index from one user to the next (a loose index scan): a
        // plain DISTINCT reads every record (1.3 s at a million points, 0.7 ms this way).
        self.read(|c| {
            let sql = "WITH RECURSIVE seen(user) AS (
                           SELECT MIN(user) FROM records
                           UNION ALL
                           SELECT (SELECT MIN(user) FROM records WHERE user > seen.user)
                           FROM seen WHERE seen.user IS NOT NULL)
                       SELECT user FROM seen WHERE user IS NOT NULL
                       UNION SELECT user FROM last UNION SELECT user FROM cards ORDER BY 1";
            c.prepare_cached(sql)?.query_map([], |row| row.get(0))?.collect()
        })
    }

    fn devices(&self, user: &str) -> Result<Vec<String>> {
        // The same hop over the user's part of the index.
        self.read(|c| {
            let sql = "WITH RECURSIVE seen(device) AS (
                           SELECT MIN(device) FROM records WHERE user = ?1
                           UNION ALL
                           SELECT (SELECT MIN(device) FROM records WHERE user = ?1 AND device > seen.device)
                           FROM seen WHERE seen.device IS NOT NULL)
                       SELECT device FROM seen WHERE device IS NOT NULL
                       UNION SELECT device FROM last WHERE user = ?1
                       UNION SELECT device FROM cards WHERE user = ?1 ORDER BY 1";
            c.prepare_cached(sql)?.query_map([user], |row| row.get(0))?.collect()
        })
    }

    fn months(&self, user: &str, device: &str) -> Result<Vec<String>> {
        self.read(|c| {
            let sql = "SELECT DISTINCT strftime('%Y-%m', tst, 'unixepoch') FROM records
                       WHERE user = ?1 AND device = ?2 ORDER BY 1";
            c.prepare_cached(sql)?.query_map([user, device], |row| row.get(0))?.collect()
        })
    }

    fn last(&self) -> Result<Vec<Last>> {
        self.read(|c| {
            let sql = "SELECT user, device, json FROM last ORDER BY user, device";
            c.prepare_cached(sql)?
                .query_map([], |row| Ok(Last { user: row.get(0)?, device: row.get(1)?, json: row.get(2)? }))?
                .collect()
        })
    }

    fn locations(&self, user: &str, device: &str, range: Range) -> Result<Vec<Point>> {
        let point = |row: &rusqlite::Row| {
            let payload: Vec<u8> = row.get(2)?;
            Ok(Point {
                tst: row.get(0)?,
                rcv: row.get(1)?,
                json: String::from_utf8_lossy(&payload).into_owned(),
            })
        };
        self.read(|c| match range.limit {
            None => c
                .prepare_cached(
                    "SELECT tst, rcv, payload FROM records WHERE user = ?1 AND device = ?2
                     AND type = 'location' AND lat IS NOT NULL AND tst > ?3 AND tst < ?4 ORDER BY tst, id",
                )?
                .query_map(params![user, device, range.from, range.to], point)?
                .collect(),
            Some(limit) => {
                let mut newest: Vec<Point> = c
                    .prepare_cached(
                        "SELECT tst, rcv, payload FROM records WHERE user = ?1 AND device = ?2
                         AND type = 'location' AND lat IS NOT NULL AND tst > ?3 AND tst < ?4 ORDER BY tst DESC, id DESC LIMIT ?5",
                    )?
                    .query_map(params![user, device, range.from, range.to, limit as i64], point)?
                    .collect::<rusqlite::Result<_>>()?;
                newest.reverse();
                Ok(newest)
            }
        })
    }

    fn records(&self, user: &str, device: &str, from: i64, to: i64) -> Result<Vec<RawRecord>> {
        self.read(|c| {
            c.prepare_cached(
                "SELECT tst, reltopic, payload FROM records WHERE user = ?1 AND device = ?2 AND tst > ?3 AND tst < ?4
                 ORDER BY tst, id",
            )?
            .query_map(params![user, device, from, to], |row| {
                Ok(RawRecord { tst: row.get(0)?, reltopic: row.get(1)?, payload: row.get(2)? })
            })?
            .collect()
        })
    }

    fn card(&self, user: &str, device: &str) -> Result<Option<String>> {
        self.json("cards", user, device)
    }

    fn waypoints(&self, user: &str, device: &str) -> Result<Option<String>> {
        self.json("waypoints", user, device)
    }

    fn configuration(&self, user: &str, device: &str) -> Result<Option<String>> {
        self.json("configs", user, device)
    }

    fn user_card(&self, user: &str) -> Result<Option<String>> {
        self.read(|c| {
            c.prepare_cached("SELECT json FROM cards WHERE user = ?1 ORDER BY device LIMIT 1")?
                .query_row([user], |row| row.get(0))
                .optional()
        })
    }

    fn key(&self, user: &str, device: &str) -> Result<Option<String>> {
        self.read(|c| {
            c.prepare_cached("SELECT secret FROM keys WHERE user = ?1 AND device = ?2")?
                .query_row([user, device], |row| row.get(0))
                .optional()
        })
    }

    fn keys(&self) -> Result<Vec<(String, String, String)>> {
        self.read(|c| {
            c.prepare_cached("SELECT user, device, secret FROM keys ORDER BY user, device")?
                .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?
                .collect()
        })
    }

    fn all_friends(&self) -> Result<Vec<(String, String, Vec<String>)>> {
        let rows: Vec<(String, String, String)> = self.read(|c| {
            c.prepare_cached("SELECT user, device, friends FROM friends ORDER BY user, device")?
                .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?
                .collect()
        })?;
        Ok(rows.into_iter().map(|(u, d, j)| (u, d, serde_json::from_str(&j).unwrap_or_default())).collect())
    }

    fn set_key(&self, user: &str, device: &str, secret: Option<&str>) -> Result<bool> {
        self.write(|tx| match secret {
            Some(secret) => tx
                .execute(
                    "INSERT OR REPLACE INTO keys (user, device, secret) VALUES (?1, ?2, ?3)",
                    [user, device, secret],
                )
                .map(|n| n > 0),
            None => {
                tx.execute("DELETE FROM keys WHERE user = ?1 AND device = ?2", [user, device]).map(|n| n > 0)
            }
        })
    }

    fn friends(&self, user: &str, device: &str) -> Result<Option<Vec<String>>> {
        let json: Option<String> = self.read(|c| {
            c.prepare_cached("SELECT friends FROM friends WHERE user = ?1 AND device = ?2")?
                .query_row([user, device], |row| row.get(0))
                .optional()
        })?;
        Ok(json.map(|j| serde_json::from_str(&j).unwrap_or_default()))
    }

    fn set_friends(&self, user: &str, device: &str, friends: Option<&[String]>) -> Result<()> {
        self.write(|tx| {
            match friends {
                Some(list) => tx.execute(
                    "INSERT OR REPLACE INTO friends (user, device, friends) VALUES (?1, ?2, ?3)",
                    params![user, device, serde_json::to_string(list).unwrap_or_default()],
                )?,
                None => tx.execute("DELETE FROM friends WHERE user = ?1 AND device = ?2", [user, device])?,
            };
            Ok(())
        })
    }

    fn tours(&self, user: &str, device: &str, now: i64) -> Result<Vec<Tour>> {
        self.read(|c| {
            c.prepare_cached(
                "SELECT uuid, user, device, from_tst, to_tst, expires, json FROM tours
                 WHERE user = ?1 AND device = ?2 AND expires > ?3 ORDER BY from_tst, uuid",
            )?
            .query_map(params![user, device, now], tour_row)?
            .collect()
        })
    }

    fn geocache(&self, ghash: &str) -> Result<Option<String>> {
        self.read(|c| {
            c.prepare_cached("SELECT json FROM geocache WHERE ghash = ?1")?
                .query_row([ghash], |row| row.get(0))
                .optional()
        })
    }

    fn geocache_all(&self) -> Result<Vec<(String, String)>> {
        self.read(|c| {
            c.prepare_cached("SELECT ghash, json FROM geocache ORDER BY ghash")?
                .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
                .collect()
        })
    }

    fn forget_geocache(&self, ghash: &str) -> Result<bool> {
        self.write(|tx| tx.execute("DELETE FROM geocache WHERE ghash = ?1", [ghash]).map(|n| n > 0))
    }

    fn tour(&self, uuid: &str) -> Result<Option<Tour>> {
        self.read(|c| {
            c.prepare_cached(
                "SELECT uuid, user, device, from_tst, to_tst, expires, json FROM tours WHERE uuid = ?1",
            )?
            .query_row([uuid], tour_row)
            .optional()
        })
    }

    fn delete_locations(&self, user: &str, device: &str, from: i64, to: i64) -> Result<usize> {
        self.write(|tx| {
            let gone = tx.execute(
                "DELETE FROM records WHERE user = ?1 AND device = ?2 AND type = 'location' AND tst >= ?3 AND tst <= ?4",
                params![user, device, from, to],
            )?;
            refresh_last(tx, user, device)?;
            Ok(gone)
        })
    }

    fn delete_device(&self, user: &str, device: &str) -> Result<usize> {
        self.write(|tx| {
            let gone = tx.execute("DELETE FROM records WHERE user = ?1 AND device = ?2", [user, device])?;
            for table in ["last", "cards", "keys", "friends", "waypoints", "configs", "tours"] {
                tx.execute(&format!("DELETE FROM {table} WHERE user = ?1 AND device = ?2"), [user, device])?;
            }
            Ok(gone)
        })
    }

    fn purge_before(&self, tst: i64) -> Result<usize> {
        self.write(|tx| tx.execute("DELETE FROM records WHERE tst < ?1", [tst]))
    }
}
