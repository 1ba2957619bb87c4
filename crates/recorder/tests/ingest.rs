//! The recorder on its own store: what each message type becomes, normalisation, duplicates,
//! retention, deletes and schema migrations. Every test runs on both stores, SQLite and
//! PostgreSQL, and must see the same.

#[path = "support/postgres.rs"]
mod postgres_server;

use std::path::PathBuf;
use std::sync::Arc;

use cauldron_recorder::store::{PostgresStore, Range, SqliteStore, Store};
use cauldron_recorder::{crypto, Recorder, Via};
use serde_json::{json, Value};

/// Where a test's store lives, so that it can be opened again.
enum Place {
    Sqlite(PathBuf),
    Postgres(String),
}

impl Place {
    fn sqlite(name: &str) -> Place {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Place::Sqlite(dir.join("recorder.sqlite"))
    }

    fn postgres(name: &str) -> Place {
        Place::Postgres(postgres_server::fresh_database(&format!("ingest_{name}")))
    }

    fn open(&self) -> Arc<dyn Store> {
        match self {
            Place::Sqlite(path) => Arc::new(SqliteStore::open(path).unwrap()),
            Place::Postgres(url) => Arc::new(PostgresStore::open(url).unwrap()),
        }
    }

    /// How many schema changes the store says have run.
    fn schema_version(&self) -> i64 {
        match self {
            Place::Sqlite(path) => {
                let conn = rusqlite::Connection::open(path).unwrap();
                conn.pragma_query_value(None, "user_version", |row| row.get(0)).unwrap()
            }
            Place::Postgres(url) => {
                let url = url.clone();
                std::thread::spawn(move || {
                    let mut client = ::postgres::Client::connect(&url, ::postgres::NoTls).unwrap();
                    let rows =
                        client.query("SELECT version FROM recorder_schema ORDER BY version", &[]).unwrap();
                    let versions: Vec<i32> = rows.iter().map(|r| r.get(0)).collect();
                    assert_eq!(
                        versions,
                        (1..=versions.len() as i32).collect::<Vec<_>>(),
                        "one row per migration"
                    );
                    i64::from(versions.len() as i32)
                })
                .join()
                .unwrap()
            }
        }
    }
}

/// Each named test, once per store: `sqlite::name` and `postgres::name`.
macro_rules! on_both_stores {
    ($($test:ident),* $(,)?) => {
        mod sqlite { $(#[test] fn $test() { super::$test(super::Place::sqlite(stringify!($test))) })* }
        mod postgres { $(#[test] fn $test() { super::$test(super::Place::postgres(stringify!($test))) })* }
    };
}

on_both_stores!(
    strings_are_normalised_and_bad_messages_are_not_locations,
    cards_waypoints_and_dumps_have_their_own_places,
    http_and_decrypted_messages_are_marked,
    a_batch_is_one_transaction_and_duplicates_are_counted_out,
    retention_deletes_old_history_and_keeps_last_positions,
    deleting_the_newest_point_moves_last_back,
    reopening_keeps_everything_and_migrations_run_once,
    users_and_devices_come_from_history_last_positions_and_cards,
    names_sort_byte_by_byte_whatever_the_locale,
    several_recorders_on_one_store_keep_each_point_once,
    a_batch_out_of_order_leaves_its_newest_point_as_last,
);

fn recorder(place: &Place) -> Arc<Recorder> {
    Recorder::new(place.open())
}

fn ingest(recorder: &Recorder, topic: &str, payload: Value) -> usize {
    recorder.ingest([(topic, payload.to_string().as_bytes())], Via::Mqtt).unwrap()
}

const ALL: Range = Range { from: 0, to: i64::MAX, limit: None };

fn strings_are_normalised_and_bad_messages_are_not_locations(place: Place) {
    let r = recorder(&place);
    ingest(
        &r,
        "owntracks/a/b",
        json!({"_type": "location", "lat": "48.5", "lon": "2.25", "tst": "1706856000", "acc": "12"}),
    );
    let points = r.store().locations("a", "b", ALL).unwrap();
    let stored: Value = serde_json::from_str(&points[0].json).unwrap();
    assert_eq!(
        (stored["lat"].clone(), stored["tst"].clone(), stored["acc"].clone()),
        (json!(48.5), json!(1706856000), json!(12))
    );
    // No position: kept, but not as a location.
    ingest(&r, "owntracks/a/b", json!({"_type": "location", "tst": 1706856001}));
    assert_eq!(r.store().locations("a", "b", ALL).unwrap().len(), 1);
    // A transition whose event is not a string is dropped, as the Recorder drops it.
    assert_eq!(
        ingest(
            &r,
            "owntracks/a/b/event",
            json!({"_type": "transition", "event": 1, "desc": "x", "lat": 1, "lon": 1, "tst": 5})
        ),
        0
    );
    // Demo data and empty payloads are skipped.
    assert_eq!(
        ingest(
            &r,
            "owntracks/a/b",
            json!({"_type": "location", "lat": 1, "lon": 1, "tst": 7, "_demo": true})
        ),
        0
    );
    assert_eq!(r.ingest([("owntracks/a/b", &b""[..])], Via::Mqtt).unwrap(), 0);
}

fn cards_waypoints_and_dumps_have_their_own_places(place: Place) {
    let r = recorder(&place);
    ingest(&r, "owntracks/a/b/info", json!({"_type": "card", "tid": "ab", "name": "A"}));
    ingest(&r, "owntracks/a/b/waypoints", json!({"_type": "waypoints", "waypoints": []}));
    ingest(
        &r,
        "owntracks/a/b/dump",
        json!({"_type": "dump", "configuration": {"_type": "configuration", "mode": 3}}),
    );
    // A bare configuration is not a dump: it goes to the history like any other type.
    assert_eq!(ingest(&r, "owntracks/a/b/dump", json!({"_type": "configuration", "mode": 0})), 1);
    let s = r.store();
    assert!(s.card("a", "b").unwrap().unwrap().contains("\"name\":\"A\""));
    assert!(s.waypoints("a", "b").unwrap().unwrap().contains("\"waypoints\":[]"));
    assert!(s.configuration("a", "b").unwrap().unwrap().contains("\"mode\":3"));
    assert_eq!(s.records("a", "b", 0, i64::MAX).unwrap().len(), 1);
}

fn http_and_decrypted_messages_are_marked(place: Place) {
    let r = recorder(&place);
    r.store().set_key("a", "b", Some("secret")).unwrap();
    let plain = json!({"_type": "location", "lat": 1.0, "lon": 2.0, "tst": 10}).to_string();
    let sealed =
        json!({"_type": "encrypted", "data": crypto::encrypt("secret", plain.as_bytes())}).to_string();
    r.ingest([("owntracks/a/b", sealed.as_bytes())], Via::Http).unwrap();
    let stored: Value = serde_json::from_str(&r.store().locations("a", "b", ALL).unwrap()[0].json).unwrap();
    assert_eq!((stored["_http"].clone(), stored["_decrypted"].clone()), (json!(true), json!(true)));
}

fn a_batch_is_one_transaction_and_duplicates_are_counted_out(place: Place) {
    let r = recorder(&place);
    let payloads: Vec<String> = (0..1000)
        .map(|i| {
            json!({"_type": "location", "lat": 1.0, "lon": 1.0, "tst": 1_700_000_000 + i % 500}).to_string()
        })
        .collect();
    let stored = r.ingest(payloads.iter().map(|p| ("owntracks/a/b", p.as_bytes())), Via::Mqtt).unwrap();
    assert_eq!(stored, 500, "each point twice in the batch, stored once");
    let newest = r.store().locations("a", "b", Range { from: 0, to: i64::MAX, limit: Some(2) }).unwrap();
    assert_eq!(newest.iter().map(|p| p.tst).collect::<Vec<_>>(), [1_700_000_498, 1_700_000_499]);
}

fn retention_deletes_old_history_and_keeps_last_positions(place: Place) {
    let r = recorder(&place);
    for tst in [100, 200, 300] {
        ingest(&r, "owntracks/a/b", json!({"_type": "location", "lat": 1, "lon": 1, "tst": tst}));
    }
    assert_eq!(r.store().purge_before(250).unwrap(), 2);
    assert_eq!(r.store().locations("a", "b", ALL).unwrap().len(), 1);
    assert_eq!(r.store().last().unwrap().len(), 1);
}

fn deleting_the_newest_point_moves_last_back(place: Place) {
    let r = recorder(&place);
    for tst in [100, 200] {
        ingest(&r, "owntracks/a/b", json!({"_type": "location", "lat": 1, "lon": 1, "tst": tst}));
    }
    assert_eq!(r.store().delete_locations("a", "b", 200, 200).unwrap(), 1);
    assert!(r.store().last().unwrap()[0].json.contains("\"tst\":100"));
    assert_eq!(r.store().delete_locations("a", "b", 0, 1000).unwrap(), 1);
    assert!(r.store().last().unwrap().is_empty(), "no location left, no last position");
}

fn reopening_keeps_everything_and_migrations_run_once(place: Place) {
    let r = recorder(&place);
    ingest(&r, "owntracks/a/b", json!({"_type": "location", "lat": 1, "lon": 1, "tst": 100}));
    r.store().set_friends("a", "b", Some(&["c/d".to_string()])).unwrap();
    drop(r);
    let store = place.open();
    assert_eq!(store.locations("a", "b", ALL).unwrap().len(), 1);
    assert_eq!(store.friends("a", "b").unwrap(), Some(vec!["c/d".to_string()]));
    drop(place.open());
    assert_eq!(place.schema_version(), 3, "every migration run once, the store opened three times");
}

fn users_and_devices_come_from_history_last_positions_and_cards(place: Place) {
    let r = recorder(&place);
    for (topic, kind) in [
        ("owntracks/b/x", "location"),
        ("owntracks/a/y", "status"),
        ("owntracks/a/w", "location"),
        ("owntracks/c/z/info", "card"),
    ] {
        ingest(&r, topic, json!({"_type": kind, "lat": 1, "lon": 1, "tst": 100, "tid": "zz"}));
    }
    assert_eq!(r.store().users().unwrap(), ["a", "b", "c"]);
    assert_eq!(r.store().devices("a").unwrap(), ["w", "y"]);
    assert_eq!(r.store().devices("c").unwrap(), ["z"]);
    assert!(r.store().devices("nobody").unwrap().is_empty());
}

fn names_sort_byte_by_byte_whatever_the_locale(place: Place) {
    let r = recorder(&place);
    for user in ["émile", "bob", "Zoe", "alice", "Bob"] {
        ingest(
            &r,
            &format!("owntracks/{user}/phone"),
            json!({"_type": "location", "lat": 1, "lon": 1, "tst": 100}),
        );
    }
    assert_eq!(r.store().users().unwrap(), ["Bob", "Zoe", "alice", "bob", "émile"]);
}

fn several_recorders_on_one_store_keep_each_point_once(place: Place) {
    // Two recorders (two nodes of a cluster, say) receive the same 2,000 points at once.
    let recorders = [recorder(&place), recorder(&place)];
    let payloads: Vec<String> = (0..2000)
        .map(|i| json!({"_type": "location", "lat": 1.0, "lon": 1.0, "tst": 1_700_000_000 + i}).to_string())
        .collect();
    let stored: usize = std::thread::scope(|s| {
        let writers: Vec<_> = recorders
            .iter()
            .map(|r| {
                s.spawn(|| {
                    payloads
                        .chunks(100)
                        .map(|chunk| {
                            r.ingest(chunk.iter().map(|p| ("owntracks/a/b", p.as_bytes())), Via::Mqtt)
                                .unwrap()
                        })
                        .sum::<usize>()
                })
            })
            .collect();
        writers.into_iter().map(|w| w.join().unwrap()).sum()
    });
    assert_eq!(stored, 2000, "between them the two stored each point once");
    assert_eq!(recorders[0].store().locations("a", "b", ALL).unwrap().len(), 2000);
}

fn a_batch_out_of_order_leaves_its_newest_point_as_last(place: Place) {
    let r = recorder(&place);
    let point = |tst: i64, tid: &str| {
        json!({"_type": "location", "lat": 1, "lon": 1, "tst": tst, "tid": tid}).to_string()
    };
    let batch =
        [point(300, "a"), point(500, "first"), point(100, "b"), point(500, "second"), point(400, "c")];
    r.ingest(batch.iter().map(|p| ("owntracks/a/b", p.as_bytes())), Via::Mqtt).unwrap();
    let last = r.store().last().unwrap();
    assert_eq!(last.len(), 1);
    assert!(
        last[0].json.contains("\"tid\":\"first\""),
        "the first of the newest, as one by one: {}",
        last[0].json
    );
    r.ingest([("owntracks/a/b", point(200, "late").as_bytes())], Via::Mqtt).unwrap();
    assert!(
        r.store().last().unwrap()[0].json.contains("\"tst\":500"),
        "a later batch with an older point does not move it back"
    );
}
