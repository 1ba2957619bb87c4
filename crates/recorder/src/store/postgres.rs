//! The shared store: every table of the recorder in a PostgreSQL database, for several cauldron
//! nodes (or an operator who already runs and backs up PostgreSQL). Same schema and the same
//! answers as [`super::SqliteStore`]; several recorders may write to one database at once: the
//! unique index that drops duplicates is the database's, so a point sent to two of them is
//! stored once.
//!
//! Each connection lives on a thread of its own. The synchronous client runs a small tokio
//! runtime inside, which may not be started, used or dropped on an async worker; callers of
//! [`Store`] can be anywhere (the blocking pool, a command's main), so they hand their work
//! to that thread and wait for the answer.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::mpsc;

use postgres::{Client, GenericClient, NoTls, Row, Statement};

use super::{Batches, Last, Op, Point, Range, RawRecord, Record, Result, Store, StoreError, Tour};

/// Schema changes, applied in order; `recorder_schema.version` is how many have run. Append
/// only. Names are compared byte by byte (`COLLATE "C"`), as SQLite does: lists sort the
/// same on both stores whatever the database's locale.
const MIGRATIONS: &[&str] = &[
    // 1: history, last positions, cards, keys, friends, waypoints, configuration dumps.
    r#"CREATE TABLE records (
        id BIGSERIAL PRIMARY KEY,
        "user" TEXT COLLATE "C" NOT NULL,
        device TEXT COLLATE "C" NOT NULL,
        reltopic TEXT COLLATE "C" NOT NULL,
        type TEXT COLLATE "C",
        tst BIGINT NOT NULL,
        rcv BIGINT NOT NULL,
        lat DOUBLE PRECISION,
        lon DOUBLE PRECISION,
        payload BYTEA NOT NULL,
        dedup BOOLEAN NOT NULL
    );
    CREATE INDEX records_by_time ON records ("user", device, type, tst);
    CREATE UNIQUE INDEX records_once ON records ("user", device, type, tst, lat, lon) WHERE dedup;
    CREATE INDEX records_by_age ON records (tst);
    CREATE TABLE last ("user" TEXT COLLATE "C" NOT NULL, device TEXT COLLATE "C" NOT NULL,
        tst BIGINT NOT NULL, json TEXT NOT NULL, PRIMARY KEY ("user", device));
    CREATE TABLE cards ("user" TEXT COLLATE "C" NOT NULL, device TEXT COLLATE "C" NOT NULL,
        json TEXT NOT NULL, PRIMARY KEY ("user", device));
    CREATE TABLE keys ("user" TEXT COLLATE "C" NOT NULL, device TEXT COLLATE "C" NOT NULL,
        secret TEXT NOT NULL, PRIMARY KEY ("user", device));
    CREATE TABLE friends ("user" TEXT COLLATE "C" NOT NULL, device TEXT COLLATE "C" NOT NULL,
        friends TEXT NOT NULL, PRIMARY KEY ("user", device));
    CREATE TABLE waypoints ("user" TEXT COLLATE "C" NOT NULL, device TEXT COLLATE "C" NOT NULL,
        json TEXT NOT NULL, PRIMARY KEY ("user", device));
    CREATE TABLE configs ("user" TEXT COLLATE "C" NOT NULL, device TEXT COLLATE "C" NOT NULL,
        json TEXT NOT NULL, PRIMARY KEY ("user", device));"#,
    // 2: tours, the shared views of a device's track.
    r#"CREATE TABLE tours (uuid TEXT COLLATE "C" PRIMARY KEY, "user" TEXT COLLATE "C" NOT NULL,
        device TEXT COLLATE "C" NOT NULL, from_tst BIGINT NOT NULL, to_tst BIGINT NOT NULL,
        expires BIGINT NOT NULL, json TEXT NOT NULL);
    CREATE INDEX tours_by_device ON tours ("user", device);"#,
    // 3: a geocoder's answers by geohash.
    r#"CREATE TABLE geocache (ghash TEXT COLLATE "C" PRIMARY KEY, json TEXT NOT NULL);"#,
];

/// Held while migrating, so recorders starting together apply each change once.
const MIGRATION_LOCK: i64 = 0x6361_756c_6472_6f6e; // "cauldron"

pub struct PostgresStore {
    writer: Connection,
    reader: Connection,
}

impl PostgresStore {
    /// Connects to `url` (`postgres://user:password@host:port/database`, or key=value
    /// settings) and brings the schema up to date.
    pub fn open(url: &str) -> Result<PostgresStore> {
        let mut config = postgres::Config::from_str(url)
            .map_err(|e| StoreError::Open { what: redacted(url), cause: Box::new(e) })?;
        // An unreachable host fails the start in bounded time, not after the kernel's minutes.
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(std::time::Duration::from_secs(10));
        }
        let writer = Connection::open(config.clone(), &redacted(url))?;
        writer.call_once(|worker| migrate(&mut worker.db()?.client))?;
        let reader = Connection::open(config, &redacted(url))?;
        Ok(PostgresStore { writer, reader })
    }
}

/// The URL without its password, for messages.
pub fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            let user = credentials.split(':').next().unwrap_or_default();
            format!("{}{user}{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.split_whitespace().filter(|kv| !kv.starts_with("password=")).collect::<Vec<_>>().join(" "),
    }
}

fn migrate(client: &mut Client) -> std::result::Result<(), postgres::Error> {
    let mut tx = client.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
    // "already exists, skipping" is the normal case: not a notice for the log at every start.
    tx.batch_execute("SET LOCAL client_min_messages = warning")?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS recorder_schema (version INTEGER NOT NULL)")?;
    let done: i32 = tx.query_one("SELECT COALESCE(MAX(version), 0) FROM recorder_schema", &[])?.get(0);
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(done as usize) {
        tx.batch_execute(sql)?;
        tx.execute("INSERT INTO recorder_schema (version) VALUES ($1)", &[&(i as i32 + 1)])?;
    }
    tx.commit()
}

/// A connection and the statements it has prepared.
struct Db {
    client: Client,
    statements: HashMap<&'static str, Statement>,
}

impl Db {
    /// `sql`, prepared once per connection: a query is then one round trip, not two.
    fn statement(
        statements: &mut HashMap<&'static str, Statement>,
        client: &mut impl GenericClient,
        sql: &'static str,
    ) -> std::result::Result<Statement, postgres::Error> {
        if let Some(statement) = statements.get(sql) {
            return Ok(statement.clone());
        }
        let statement = client.prepare(sql)?;
        statements.insert(sql, statement.clone());
        Ok(statement)
    }

    fn query(
        &mut self,
        sql: &'static str,
        params: &[&(dyn postgres::types::ToSql + Sync)],
    ) -> std::result::Result<Vec<Row>, postgres::Error> {
        let statement = Db::statement(&mut self.statements, &mut self.client, sql)?;
        self.client.query(&statement, params)
    }

    /// Runs `f` in one transaction, committed if it returns `Ok`.
    fn transaction<T>(
        &mut self,
        f: impl FnOnce(&mut Tx) -> std::result::Result<T, postgres::Error>,
    ) -> std::result::Result<T, postgres::Error> {
        let mut tx = Tx { tx: self.client.transaction()?, statements: &mut self.statements };
        let out = f(&mut tx)?;
        tx.tx.commit()?;
        Ok(out)
    }
}

struct Tx<'a> {
    tx: postgres::Transaction<'a>,
    statements: &'a mut HashMap<&'static str, Statement>,
}

impl Tx<'_> {
    fn execute(
        &mut self,
        sql: &'static str,
        params: &[&(dyn postgres::types::ToSql + Sync)],
    ) -> std::result::Result<u64, postgres::Error> {
        let statement = Db::statement(self.statements, &mut self.tx, sql)?;
        self.tx.execute(&statement, params)
    }

    fn query(
        &mut self,
        sql: &'static str,
        params: &[&(dyn postgres::types::ToSql + Sync)],
    ) -> std::result::Result<Vec<Row>, postgres::Error> {
        let statement = Db::statement(self.statements, &mut self.tx, sql)?;
        self.tx.query(&statement, params)
    }
}

type Job = Box<dyn FnOnce(&mut Worker) + Send>;

/// A connection as its thread holds it: connected, or to be connected again on the next call.
struct Worker {
    config: postgres::Config,
    name: String,
    db: Option<Db>,
}

impl Worker {
    fn connect(&self) -> std::result::Result<Db, postgres::Error> {
        let client = self.config.connect(NoTls)?;
        Ok(Db { client, statements: HashMap::new() })
    }

    /// The connection, made again if the server closed it.
    fn db(&mut self) -> std::result::Result<&mut Db, postgres::Error> {
        let db = match self.db.take() {
            Some(db) if !db.client.is_closed() => db,
            gone => {
                if gone.is_some() {
                    tracing::warn!("recorder store {}: connection lost, connecting again", self.name);
                }
                self.connect()?
            }
        };
        Ok(self.db.insert(db))
    }

    fn lost(&self) -> bool {
        self.db.as_ref().is_some_and(|db| db.client.is_closed())
    }
}

/// One connection on its own thread; it reconnects when the server went away (a restart, a
/// failover), and a call that met the closed connection runs once more on the new one.
struct Connection {
    jobs: mpsc::Sender<Job>,
}

impl Connection {
    fn open(config: postgres::Config, name: &str) -> Result<Connection> {
        let (jobs, queue) = mpsc::channel::<Job>();
        let (opened, first) = mpsc::sync_channel(1);
        let mut worker = Worker { config, name: name.to_string(), db: None };
        std::thread::Builder::new()
            .name("recorder-postgres".into())
            .spawn(move || {
                match worker.connect() {
                    Ok(db) => {
                        worker.db = Some(db);
                        let _ = opened.send(Ok(()));
                    }
                    Err(e) => return drop(opened.send(Err(e))),
                }
                for job in queue {
                    job(&mut worker);
                }
            })
            .map_err(|e| StoreError::Open { what: "a thread for the store".into(), cause: Box::new(e) })?;
        match first.recv() {
            Ok(Ok(())) => Ok(Connection { jobs }),
            Ok(Err(e)) => Err(StoreError::Open { what: name.to_string(), cause: Box::new(e) }),
            Err(_) => Err(StoreError::Closed),
        }
    }

    /// Runs `f` on the connection's thread and waits for its answer; if the connection was
    /// found closed, once more on a new one. A write retried after its commit got through but
    /// its answer did not is no second copy of a point: the unique index drops it.
    fn call<T: Send + 'static>(
        &self,
        f: impl Fn(&mut Db) -> std::result::Result<T, postgres::Error> + Send + 'static,
    ) -> Result<T> {
        self.call_once(move |worker| match f(worker.db()?) {
            Err(_) if worker.lost() => f(worker.db()?),
            done => done,
        })
    }

    /// Runs `f` once on the connection's thread and waits for its answer.
    fn call_once<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Worker) -> std::result::Result<T, postgres::Error> + Send + 'static,
    ) -> Result<T> {
        let (answer, answered) = mpsc::sync_channel(1);
        let job: Job = Box::new(move |worker| {
            let _ = answer.send(f(worker).map_err(StoreError::from));
        });
        self.jobs.send(job).map_err(|_| StoreError::Closed)?;
        answered.recv().map_err(|_| StoreError::Closed)?
    }
}

/// The per-device JSON tables and their statements (table names cannot be parameters).
#[derive(Clone, Copy)]
enum JsonTable {
    Cards,
    Waypoints,
    Configs,
}

impl JsonTable {
    fn select(self) -> &'static str {
        match self {
            JsonTable::Cards => r#"SELECT json FROM cards WHERE "user" = $1 AND device = $2"#,
            JsonTable::Waypoints => r#"SELECT json FROM waypoints WHERE "user" = $1 AND device = $2"#,
            JsonTable::Configs => r#"SELECT json FROM configs WHERE "user" = $1 AND device = $2"#,
        }
    }

    fn upsert(self) -> &'static str {
        match self {
            JsonTable::Cards => {
                r#"INSERT INTO cards ("user", device, json) VALUES ($1, $2, $3)
                   ON CONFLICT ("user", device) DO UPDATE SET json = excluded.json"#
            }
            JsonTable::Waypoints => {
                r#"INSERT INTO waypoints ("user", device, json) VALUES ($1, $2, $3)
                   ON CONFLICT ("user", device) DO UPDATE SET json = excluded.json"#
            }
            JsonTable::Configs => {
                r#"INSERT INTO configs ("user", device, json) VALUES ($1, $2, $3)
                   ON CONFLICT ("user", device) DO UPDATE SET json = excluded.json"#
            }
        }
    }
}

/// Every record of a batch in one statement (arrays unnested in order): one round trip per
/// batch instead of one per point.
/// A record without a place, to be stored once, is a copy when the same message at the same
/// time is stored: the unique index has no place to compare.
const INSERT_RECORDS: &str = r#"INSERT INTO records ("user", device, reltopic, type, tst, rcv, lat, lon, payload, dedup)
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::int8[], $6::int8[],
                         $7::float8[], $8::float8[], $9::bytea[], $10::bool[])
        AS n(u, d, reltopic, type, tst, rcv, lat, lon, payload, dedup)
    WHERE NOT (n.dedup AND n.lat IS NULL AND EXISTS (
        SELECT 1 FROM records r WHERE r."user" = n.u AND r.device = n.d AND r.type IS NOT DISTINCT FROM n.type
        AND r.tst = n.tst AND r.reltopic = n.reltopic AND r.payload = n.payload))
    ON CONFLICT DO NOTHING"#;

fn insert_records(tx: &mut Tx, records: &[&Record]) -> std::result::Result<u64, postgres::Error> {
    if records.is_empty() {
        return Ok(0);
    }
    let column = |f: fn(&Record) -> &str| records.iter().map(|r| f(r)).collect::<Vec<_>>();
    let (users, devices, reltopics) = (column(|r| &r.user), column(|r| &r.device), column(|r| &r.reltopic));
    let kinds: Vec<Option<&str>> = records.iter().map(|r| r.kind.as_deref()).collect();
    let tsts: Vec<i64> = records.iter().map(|r| r.tst).collect();
    let rcvs: Vec<i64> = records.iter().map(|r| r.rcv).collect();
    let lats: Vec<Option<f64>> = records.iter().map(|r| r.lat).collect();
    let lons: Vec<Option<f64>> = records.iter().map(|r| r.lon).collect();
    let payloads: Vec<&[u8]> = records.iter().map(|r| r.payload.as_slice()).collect();
    let dedups: Vec<bool> = records.iter().map(|r| r.dedup).collect();
    tx.execute(
        INSERT_RECORDS,
        &[&users, &devices, &reltopics, &kinds, &tsts, &rcvs, &lats, &lons, &payloads, &dedups],
    )
}

/// One batch's operations inside the transaction `tx`; returns how many records were new.
fn apply_batch(tx: &mut Tx, ops: &[Op]) -> std::result::Result<usize, postgres::Error> {
    let records: Vec<&Record> =
        ops.iter().filter_map(|op| if let Op::Record(r) = op { Some(r) } else { None }).collect();
    let new = insert_records(tx, &records)?;
    for op in ops {
        match op {
            Op::Record(_) => {}
            Op::Last { user, device, tst, json } => {
                // Only forward in time: a late redelivery does not move the device back.
                tx.execute(
                    r#"INSERT INTO last ("user", device, tst, json) VALUES ($1, $2, $3, $4)
                       ON CONFLICT ("user", device) DO UPDATE SET tst = excluded.tst, json = excluded.json
                       WHERE excluded.tst > last.tst"#,
                    &[user, device, tst, json],
                )?;
            }
            Op::Card { user, device, json } => {
                tx.execute(JsonTable::Cards.upsert(), &[user, device, json])?;
            }
            Op::Waypoints { user, device, json } => {
                tx.execute(JsonTable::Waypoints.upsert(), &[user, device, json])?;
            }
            Op::Config { user, device, json } => {
                tx.execute(JsonTable::Configs.upsert(), &[user, device, json])?;
            }
            Op::Tour(t) => {
                tx.execute(
                    r#"INSERT INTO tours (uuid, "user", device, from_tst, to_tst, expires, json)
                       VALUES ($1, $2, $3, $4, $5, $6, $7)
                       ON CONFLICT (uuid) DO UPDATE SET json = excluded.json, expires = excluded.expires"#,
                    &[&t.uuid, &t.user, &t.device, &t.from, &t.to, &t.expires, &t.json],
                )?;
            }
            Op::Geocache { ghash, json } => {
                tx.execute(
                    "INSERT INTO geocache (ghash, json) VALUES ($1, $2) ON CONFLICT (ghash) DO UPDATE SET json = excluded.json",
                    &[ghash, json],
                )?;
            }
            Op::Untour { user, device, uuid } => {
                tx.execute(
                    r#"DELETE FROM tours WHERE uuid = $1 AND "user" = $2 AND device = $3"#,
                    &[uuid, user, device],
                )?;
            }
        }
    }
    Ok(new as usize)
}

fn tour_row(row: &Row) -> Tour {
    Tour {
        uuid: row.get(0),
        user: row.get(1),
        device: row.get(2),
        from: row.get(3),
        to: row.get(4),
        expires: row.get(5),
        json: row.get(6),
    }
}

/// Sets the last position to the newest stored location, or removes it if none is left.
fn refresh_last(tx: &mut Tx, user: &str, device: &str) -> std::result::Result<(), postgres::Error> {
    let newest = tx.query(
        r#"SELECT tst, payload FROM records WHERE "user" = $1 AND device = $2 AND type = 'location'
           AND lat IS NOT NULL ORDER BY tst DESC, id DESC LIMIT 1"#,
        &[&user, &device],
    )?;
    match newest.first() {
        Some(row) => {
            let (tst, json): (i64, Vec<u8>) = (row.get(0), row.get(1));
            tx.execute(
                r#"INSERT INTO last ("user", device, tst, json) VALUES ($1, $2, $3, $4)
                   ON CONFLICT ("user", device) DO UPDATE SET tst = excluded.tst, json = excluded.json"#,
                &[&user, &device, &tst, &String::from_utf8_lossy(&json).as_ref()],
            )?
        }
        None => tx.execute(r#"DELETE FROM last WHERE "user" = $1 AND device = $2"#, &[&user, &device])?,
    };
    Ok(())
}

fn strings(rows: Vec<Row>) -> Vec<String> {
    rows.iter().map(|row| row.get(0)).collect()
}

fn point(row: &Row) -> Point {
    let payload: Vec<u8> = row.get(2);
    Point { tst: row.get(0), rcv: row.get(1), json: String::from_utf8_lossy(&payload).into_owned() }
}

/// Owned copies of a device's names, for a job that runs on another thread.
fn names(user: &str, device: &str) -> (String, String) {
    (user.to_string(), device.to_string())
}

impl PostgresStore {
    /// Sets (`Some`) or removes (`None`) a device's value in a per-device table; true if a row
    /// changed.
    fn put_or_delete(
        &self,
        upsert: &'static str,
        delete: &'static str,
        user: &str,
        device: &str,
        value: Option<String>,
    ) -> Result<bool> {
        let (user, device) = names(user, device);
        self.writer.call(move |db| {
            db.transaction(|tx| {
                let changed = match &value {
                    Some(value) => tx.execute(upsert, &[&user, &device, value])?,
                    None => tx.execute(delete, &[&user, &device])?,
                };
                Ok(changed > 0)
            })
        })
    }

    fn json(&self, table: JsonTable, user: &str, device: &str) -> Result<Option<String>> {
        let (user, device) = names(user, device);
        self.reader.call(move |db| Ok(strings(db.query(table.select(), &[&user, &device])?).pop()))
    }
}

impl Store for PostgresStore {
    fn apply(&self, ops: &[Op]) -> Result<usize> {
        let ops = ops.to_vec();
        self.writer.call(move |db| db.transaction(|tx| apply_batch(tx, &ops)))
    }

    fn apply_all(&self, batches: Batches) -> Result<usize> {
        // Once: the batches are made as they are written and cannot be made again.
        self.writer.call_once(move |worker| {
            worker.db()?.transaction(|tx| batches.map(|ops| apply_batch(tx, &ops)).sum())
        })
    }

    fn users(&self) -> Result<Vec<String>> {
        // Distinct users by hopping the index from one user to the next, as in SQLite.
        self.reader.call(|db| {
            let sql = r#"WITH RECURSIVE seen(u) AS (
                             SELECT MIN("user") FROM records
                             UNION ALL
                             SELECT (SELECT MIN("user") FROM records WHERE "user" > seen.u)
                             FROM seen WHERE seen.u IS NOT NULL)
                         SELECT u FROM seen WHERE u IS NOT NULL
                         UNION SELECT "user" FROM last UNION SELECT "user" FROM cards ORDER BY 1"#;
            Ok(strings(db.query(sql, &[])?))
        })
    }

    fn devices(&self, user: &str) -> Result<Vec<String>> {
        let user = user.to_string();
        self.reader.call(move |db| {
            let sql = r#"WITH RECURSIVE seen(d) AS (
                             SELECT MIN(device) FROM records WHERE "user" = $1
                             UNION ALL
                             SELECT (SELECT MIN(device) FROM records WHERE "user" = $1 AND device > seen.d)
                             FROM seen WHERE seen.d IS NOT NULL)
                         SELECT d FROM seen WHERE d IS NOT NULL
                         UNION SELECT device FROM last WHERE "user" = $1
                         UNION SELECT device FROM cards WHERE "user" = $1 ORDER BY 1"#;
            Ok(strings(db.query(sql, &[&user])?))
        })
    }

    fn months(&self, user: &str, device: &str) -> Result<Vec<String>> {
        let (user, device) = names(user, device);
        self.reader.call(move |db| {
            let sql = r#"SELECT DISTINCT to_char(to_timestamp(tst) AT TIME ZONE 'UTC', 'YYYY-MM') COLLATE "C"
                         FROM records WHERE "user" = $1 AND device = $2 ORDER BY 1"#;
            Ok(strings(db.query(sql, &[&user, &device])?))
        })
    }

    fn last(&self) -> Result<Vec<Last>> {
        self.reader.call(|db| {
            let rows = db.query(r#"SELECT "user", device, json FROM last ORDER BY "user", device"#, &[])?;
            Ok(rows
                .iter()
                .map(|row| Last { user: row.get(0), device: row.get(1), json: row.get(2) })
                .collect())
        })
    }

    fn locations(&self, user: &str, device: &str, range: Range) -> Result<Vec<Point>> {
        let (user, device) = names(user, device);
        self.reader.call(move |db| match range.limit {
            None => {
                let rows = db.query(
                    r#"SELECT tst, rcv, payload FROM records WHERE "user" = $1 AND device = $2
                       AND type = 'location' AND lat IS NOT NULL AND tst > $3 AND tst < $4 ORDER BY tst, id"#,
                    &[&user, &device, &range.from, &range.to],
                )?;
                Ok(rows.iter().map(point).collect())
            }
            Some(limit) => {
                let rows = db.query(
                    r#"SELECT tst, rcv, payload FROM records WHERE "user" = $1 AND device = $2
                       AND type = 'location' AND lat IS NOT NULL AND tst > $3 AND tst < $4
                       ORDER BY tst DESC, id DESC LIMIT $5"#,
                    &[&user, &device, &range.from, &range.to, &(limit as i64)],
                )?;
                Ok(rows.iter().rev().map(point).collect())
            }
        })
    }

    fn records(&self, user: &str, device: &str, from: i64, to: i64) -> Result<Vec<RawRecord>> {
        let (user, device) = names(user, device);
        self.reader.call(move |db| {
            let rows = db.query(
                r#"SELECT tst, reltopic, payload FROM records WHERE "user" = $1 AND device = $2
                   AND tst > $3 AND tst < $4 ORDER BY tst, id"#,
                &[&user, &device, &from, &to],
            )?;
            Ok(rows
                .iter()
                .map(|row| RawRecord { tst: row.get(0), reltopic: row.get(1), payload: row.get(2) })
                .collect())
        })
    }

    fn card(&self, user: &str, device: &str) -> Result<Option<String>> {
        self.json(JsonTable::Cards, user, device)
    }

    fn waypoints(&self, user: &str, device: &str) -> Result<Option<String>> {
        self.json(JsonTable::Waypoints, user, device)
    }

    fn configuration(&self, user: &str, device: &str) -> Result<Option<String>> {
        self.json(JsonTable::Configs, user, device)
    }

    fn user_card(&self, user: &str) -> Result<Option<String>> {
        let user = user.to_string();
        self.reader.call(move |db| {
            let sql = r#"SELECT json FROM cards WHERE "user" = $1 ORDER BY device LIMIT 1"#;
            Ok(strings(db.query(sql, &[&user])?).pop())
        })
    }

    fn key(&self, user: &str, device: &str) -> Result<Option<String>> {
        let (user, device) = names(user, device);
        self.reader.call(move |db| {
            let sql = r#"SELECT secret FROM keys WHERE "user" = $1 AND device = $2"#;
            Ok(strings(db.query(sql, &[&user, &device])?).pop())
        })
    }

    fn keys(&self) -> Result<Vec<(String, String, String)>> {
        self.reader.call(|db| {
            let rows = db.query(r#"SELECT "user", device, secret FROM keys ORDER BY "user", device"#, &[])?;
            Ok(rows.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect())
        })
    }

    fn all_friends(&self) -> Result<Vec<(String, String, Vec<String>)>> {
        self.reader.call(|db| {
            let rows =
                db.query(r#"SELECT "user", device, friends FROM friends ORDER BY "user", device"#, &[])?;
            Ok(rows
                .iter()
                .map(|r| {
                    (r.get(0), r.get(1), serde_json::from_str(&r.get::<_, String>(2)).unwrap_or_default())
                })
                .collect())
        })
    }

    fn set_key(&self, user: &str, device: &str, secret: Option<&str>) -> Result<bool> {
        let upsert = r#"INSERT INTO keys ("user", device, secret) VALUES ($1, $2, $3)
                        ON CONFLICT ("user", device) DO UPDATE SET secret = excluded.secret"#;
        let delete = r#"DELETE FROM keys WHERE "user" = $1 AND device = $2"#;
        self.put_or_delete(upsert, delete, user, device, secret.map(str::to_string))
    }

    fn friends(&self, user: &str, device: &str) -> Result<Option<Vec<String>>> {
        let (user, device) = names(user, device);
        let json = self.reader.call(move |db| {
            let sql = r#"SELECT friends FROM friends WHERE "user" = $1 AND device = $2"#;
            Ok(strings(db.query(sql, &[&user, &device])?).pop())
        })?;
        Ok(json.map(|j| serde_json::from_str(&j).unwrap_or_default()))
    }

    fn set_friends(&self, user: &str, device: &str, friends: Option<&[String]>) -> Result<()> {
        let upsert = r#"INSERT INTO friends ("user", device, friends) VALUES ($1, $2, $3)
                        ON CONFLICT ("user", device) DO UPDATE SET friends = excluded.friends"#;
        let delete = r#"DELETE FROM friends WHERE "user" = $1 AND device = $2"#;
        let list = friends.map(|list| serde_json::to_string(list).unwrap_or_default());
        self.put_or_delete(upsert, delete, user, device, list).map(|_| ())
    }

    fn tours(&self, user: &str, device: &str, now: i64) -> Result<Vec<Tour>> {
        let (user, device) = names(user, device);
        self.reader.call(move |db| {
            let sql = r#"SELECT uuid, "user", device, from_tst, to_tst, expires, json FROM tours
                         WHERE "user" = $1 AND device = $2 AND expires > $3 ORDER BY from_tst, uuid"#;
            Ok(db.query(sql, &[&user, &device, &now])?.iter().map(tour_row).collect())
        })
    }

    fn geocache(&self, ghash: &str) -> Result<Option<String>> {
        let ghash = ghash.to_string();
        self.reader.call(move |db| {
            Ok(strings(db.query("SELECT json FROM geocache WHERE ghash = $1", &[&ghash])?).pop())
        })
    }

    fn geocache_all(&self) -> Result<Vec<(String, String)>> {
        self.reader.call(|db| {
            let rows = db.query("SELECT ghash, json FROM geocache ORDER BY ghash", &[])?;
            Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
        })
    }

    fn forget_geocache(&self, ghash: &str) -> Result<bool> {
        let ghash = ghash.to_string();
        self.writer.call(move |db| {
            db.transaction(|tx| Ok(tx.execute("DELETE FROM geocache WHERE ghash = $1", &[&ghash])? > 0))
        })
    }

    fn tour(&self, uuid: &str) -> Result<Option<Tour>> {
        let uuid = uuid.to_string();
        self.reader.call(move |db| {
            let sql =
                r#"SELECT uuid, "user", device, from_tst, to_tst, expires, json FROM tours WHERE uuid = $1"#;
            Ok(db.query(sql, &[&uuid])?.first().map(tour_row))
        })
    }

    fn delete_locations(&self, user: &str, device: &str, from: i64, to: i64) -> Result<usize> {
        let (user, device) = names(user, device);
        self.writer.call(move |db| {
            db.transaction(|tx| {
                let gone = tx.execute(
                    r#"DELETE FROM records WHERE "user" = $1 AND device = $2 AND type = 'location'
                       AND tst >= $3 AND tst <= $4"#,
                    &[&user, &device, &from, &to],
                )?;
                refresh_last(tx, &user, &device)?;
                Ok(gone as usize)
            })
        })
    }

    fn delete_device(&self, user: &str, device: &str) -> Result<usize> {
        let (user, device) = names(user, device);
        self.writer.call(move |db| {
            db.transaction(|tx| {
                let gone = tx
                    .execute(r#"DELETE FROM records WHERE "user" = $1 AND device = $2"#, &[&user, &device])?;
                for sql in [
                    r#"DELETE FROM last WHERE "user" = $1 AND device = $2"#,
                    r#"DELETE FROM cards WHERE "user" = $1 AND device = $2"#,
                    r#"DELETE FROM keys WHERE "user" = $1 AND device = $2"#,
                    r#"DELETE FROM friends WHERE "user" = $1 AND device = $2"#,
                    r#"DELETE FROM waypoints WHERE "user" = $1 AND device = $2"#,
                    r#"DELETE FROM configs WHERE "user" = $1 AND device = $2"#,
                    r#"DELETE FROM tours WHERE "user" = $1 AND device = $2"#,
                ] {
                    tx.execute(sql, &[&user, &device])?;
                }
                Ok(gone as usize)
            })
        })
    }

    fn purge_before(&self, tst: i64) -> Result<usize> {
        self.writer.call(move |db| {
            db.transaction(|tx| Ok(tx.execute("DELETE FROM records WHERE tst < $1", &[&tst])? as usize))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::redacted;

    #[test]
    fn passwords_stay_out_of_messages() {
        assert_eq!(
            redacted("postgres://rec:s3cret@db.example:5432/owntracks"),
            "postgres://rec@db.example:5432/owntracks"
        );
        assert_eq!(redacted("postgres://db.example/owntracks"), "postgres://db.example/owntracks");
        assert_eq!(redacted("host=db user=rec password=s3cret dbname=x"), "host=db user=rec dbname=x");
    }
}
