//! The recorder on PostgreSQL (`--recorder-store`), black-box: the same messages into a cauldron
//! on SQLite and one on PostgreSQL give the same API answers, byte for byte; the command-line
//! tools reach the same store; several cauldrons share one database and store each point once.
//! The server is the throw-away one `./scripts/test` starts (`CAULDRON_TEST_POSTGRES`).

mod common;
#[path = "../../recorder/tests/support/postgres.rs"]
mod postgres_server;

use common::owntracks::*;
use common::*;
use serde_json::json;

/// Receipt times (`isorcv`) are each server's own clock; the test data is from 2024, so any
/// ISO time from 2025 on is one of them.
fn without_receipt_times(body: &str) -> String {
    let bytes = body.as_bytes();
    let mut out = String::with_capacity(body.len());
    let mut i = 0;
    while i < bytes.len() {
        let candidate = body.get(i..i + 20).unwrap_or_default();
        let iso = candidate.len() == 20
            && candidate.char_indices().all(|(k, c)| match k {
                4 | 7 => c == '-',
                10 => c == 'T',
                13 | 16 => c == ':',
                19 => c == 'Z',
                _ => c.is_ascii_digit(),
            });
        if iso && &candidate[..4] >= "2025" {
            out.push_str("<received>");
            i += 20;
        } else {
            let c = body[i..].chars().next().unwrap();
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

/// What both recorders are sent: two users whose names sort differently by locale and by
/// byte, two months, every kind of message, one of them encrypted.
async fn feed(broker: &Cauldron, encrypted: &str) {
    let p = port(&broker.addr);
    let face =
        "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==";
    publish(
        p,
        "owntracks/alice/phone/info",
        &json!({"_type": "card", "tid": "al", "name": "Alice", "face": face}).to_string(),
    )
    .await;
    for (i, (lat, lon)) in [(48.85, 2.29), (48.86, 2.30), (48.87, 2.31), (48.88, 2.32)].iter().enumerate() {
        let tst = 1706856000 + i as i64 * 600;
        let point = json!({"_type": "location", "lat": lat, "lon": lon, "tst": tst, "tid": "al", "acc": 5, "batt": 80 - i});
        publish(p, "owntracks/alice/phone", &point.to_string()).await;
        // The same point again, as a QoS 1 redelivery would bring it.
        publish(p, "owntracks/alice/phone", &point.to_string()).await;
    }
    publish(
        p,
        "owntracks/alice/phone",
        r#"{"_type":"location","lat":48.9,"lon":2.4,"tst":1709251200,"poi":"Cafe"}"#,
    )
    .await;
    publish(p, "owntracks/alice/phone/event", &example("transition.json")).await;
    publish(p, "owntracks/alice/phone/waypoints", r#"{"_type":"waypoints","waypoints":[{"_type":"waypoint","desc":"Home","lat":48.85,"lon":2.29,"rad":50,"tst":1706856100}]}"#).await;
    publish(p, "owntracks/alice/phone/status", r#"{"_type":"status","android":{"wifi":1}}"#).await;
    publish(p, "owntracks/alice/phone/raw", "not json at all").await;
    publish(p, "owntracks/alice/tablet", r#"{"_type":"location","lat":51.5,"lon":-0.12,"tst":1706859000}"#)
        .await;
    publish(
        p,
        "owntracks/Bob/phone",
        r#"{"_type":"location","lat":40.7,"lon":-74.0,"tst":1706857000,"tid":"BB"}"#,
    )
    .await;
    python(&["publish", "127.0.0.1", p, "s3cr1t", "owntracks/eve/phone", encrypted]).await;
}

/// The calls compared: every endpoint and format, with the parameters that change answers.
const CALLS: &[&str] = &[
    "/api/0/list",
    "/api/0/list?user=alice",
    "/api/0/list?user=alice&device=phone",
    "/api/0/last",
    "/api/0/last?user=alice",
    "/api/0/locations?user=alice&device=phone&from=2024-01-01&to=2024-04-01",
    "/api/0/locations?user=alice&device=phone&from=2024-01-01&to=2024-04-01&limit=2",
    "/api/0/locations?user=alice&device=phone&from=2024-01-01&to=2024-04-01&fields=tst,lat,lon,batt",
    "/api/0/locations?user=alice&device=phone&from=2024-02-02T06:50&to=2024-02-02T07:20",
    "/api/0/locations?user=alice&device=phone&from=2024-01-01&to=2024-04-01&format=geojson",
    "/api/0/locations?user=alice&device=phone&from=2024-01-01&to=2024-04-01&format=geojsonpoi",
    "/api/0/locations?user=alice&device=phone&from=2024-01-01&to=2024-04-01&format=linestring",
    "/api/0/locations?user=alice&device=phone&from=2024-01-01&to=2024-04-01&format=csv",
    "/api/0/locations?user=alice&device=phone&from=2024-01-01&to=2024-04-01&format=xml",
    "/api/0/locations?user=alice&device=phone&from=2024-01-01&to=2024-04-01&format=gpx",
    "/api/0/locations?user=Bob&device=phone&from=2024-01-01&to=2024-04-01",
    "/api/0/locations?user=eve&device=phone&from=2024-01-01&to=2024-04-01",
    "/api/0/locations?user=nobody&device=phone&from=2024-01-01&to=2024-04-01",
    "/api/0/photo?user=alice",
];

async fn answers(broker: &Cauldron) -> Vec<(String, u16, Option<String>, String)> {
    let mut out = Vec::new();
    for call in CALLS {
        let response = http(&broker.http, "GET", call, &[], b"").await;
        let kind = response.header("content-type").map(str::to_string);
        out.push((call.to_string(), response.status, kind, without_receipt_times(&response.body)));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_answers_the_same_on_sqlite_and_postgres() {
    let url = postgres_server::fresh_database("cli_same_answers");
    let (lite_dir, pg_dir) = (data_dir("recorder-pg-same-sqlite"), data_dir("recorder-pg-same-postgres"));
    let lite_data = lite_dir.to_str().unwrap();
    // The device key through the command line, into each store.
    cauldron_cli(&["recorder", "keys", "set", "eve", "phone", "s3cr1t", "--data-dir", lite_data]).await;
    cauldron_cli(&["recorder", "keys", "set", "eve", "phone", "s3cr1t", "--recorder-store", &url]).await;
    let lite = Cauldron::start(&lite_dir, &[]).await;
    let mut pg = Cauldron::start(&pg_dir, &["--recorder-store", &url]).await;
    pg.logged("OwnTracks recorder on (store postgres://postgres@").await;
    let location = example("location.json");
    for broker in [&lite, &pg] {
        feed(broker, &location).await;
        let done = |v: &serde_json::Value| v["count"] == 1;
        wait_json(
            &broker.http,
            "/api/0/locations?user=eve&device=phone&from=2024-01-01&to=2024-04-01",
            None,
            done,
        )
        .await;
        let done = |v: &serde_json::Value| v["count"] == 5;
        wait_json(
            &broker.http,
            "/api/0/locations?user=alice&device=phone&from=2024-01-01&to=2024-04-01",
            None,
            done,
        )
        .await;
    }
    let (on_sqlite, on_postgres) = (answers(&lite).await, answers(&pg).await);
    for (a, b) in on_sqlite.iter().zip(&on_postgres) {
        assert_eq!(a, b, "the same call, answered differently");
    }
    assert_eq!(on_sqlite[0].3, r#"{"results":["Bob","alice","eve"]}"#, "names in byte order on both");
    // The months of the locations, then this month's (status and raw messages carry their receipt time).
    let months = &on_sqlite[2].3;
    assert!(
        months.starts_with(r#"{"results":["rec/alice/phone/2024-02.rec","rec/alice/phone/2024-03.rec","#),
        "{months}"
    );

    // `cauldron locations` reads PostgreSQL as it reads SQLite: every record, all types.
    let raw = |flag: &'static str, place: String| async move {
        let every = ["-F", "2000-01-01", "-T", "2100-01-01", "-f", "raw"];
        cauldron_cli(&[&["locations", "-u", "alice", "-d", "phone", flag, &place][..], &every].concat()).await
    };
    let lite_raw = raw("--data-dir", lite_data.to_string()).await;
    let pg_raw = raw("--recorder-store", url.clone()).await;
    assert_eq!(without_receipt_times(&lite_raw), without_receipt_times(&pg_raw));
    assert!(pg_raw.contains("\tnot json at all\n") && pg_raw.contains("\tevent "), "{pg_raw}");

    // Deletes answer and leave the same.
    for broker in [&lite, &pg] {
        let range = "/api/0/locations?user=alice&device=phone&from=2024-02-02T07:00&to=2024-02-02T07:20";
        let gone = http(&broker.http, "DELETE", range, &[], b"").await;
        assert_eq!(gone.status, 200, "{}", gone.body);
        let killed = http(&broker.http, "POST", "/api/0/kill?user=alice&device=tablet", &[], b"").await;
        assert_eq!(killed.status, 200, "{}", killed.body);
    }
    let (after_lite, after_pg) = (answers(&lite).await, answers(&pg).await);
    assert_eq!(after_lite, after_pg);
    assert_ne!(after_lite, on_sqlite, "the deletes changed something");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cauldrons_sharing_one_database_store_each_point_once() {
    let url = postgres_server::fresh_database("cli_shared");
    let nodes = [
        Cauldron::start(&data_dir("recorder-pg-shared-a"), &["--recorder-store", &url]).await,
        Cauldron::start(&data_dir("recorder-pg-shared-b"), &["--recorder-store", &url]).await,
    ];
    // In a cluster every node sees every message: here each node is sent all of them.
    let points: Vec<String> = (0..40)
        .map(|i| {
            json!({"_type": "location", "lat": 50.0, "lon": 8.0 + i as f64 / 100.0, "tst": 1706856000 + i})
                .to_string()
        })
        .collect();
    let sends = nodes.iter().map(|node| {
        let points = points.clone();
        let port = port(&node.addr).to_string();
        async move {
            for point in &points {
                publish(&port, "owntracks/dora/phone", point).await;
            }
        }
    });
    futures_util::future::join_all(sends).await;
    let path = "/api/0/locations?user=dora&device=phone&from=2024-01-01&to=2024-04-01";
    for node in &nodes {
        let history = wait_json(&node.http, path, None, |v| v["count"] == 40).await;
        assert_eq!(history["count"], 40, "each point once, whichever node stored it");
    }
    let list = cauldron_cli(&["locations", "--list", "--recorder-store", &url]).await;
    assert_eq!(list.trim(), r#"{"results":["dora"]}"#);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_url_that_cannot_be_used_is_named_and_the_broker_serves_on() {
    let dir = data_dir("recorder-pg-bad");
    // Nothing listens on port 1 of loopback.
    let mut broker =
        Cauldron::start(&dir, &["--recorder-store", "postgres://rec:hunter2@127.0.0.1:1/owntracks"]).await;
    let line = broker.logged("OwnTracks recorder OFF").await;
    assert!(line.contains("postgres://rec@127.0.0.1:1/owntracks"), "{line}");
    assert!(!line.contains("hunter2"), "no password in the log: {line}");
    publish(port(&broker.addr), "owntracks/jane/phone", &example("location.json")).await;
    let wrong = cauldron_cli_fails(&["locations", "--list", "--recorder-store", "mysql://x@y/z"]).await;
    assert!(wrong.contains("not a store URL"), "{wrong}");
}

/// A TCP relay to the test server that can cut every connection through it at once, as a
/// database restart or a failover does.
struct Relay {
    port: u16,
    cut: tokio::sync::watch::Sender<u64>,
}

impl Relay {
    async fn to(server: &str) -> Relay {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (cut, cuts) = tokio::sync::watch::channel(0);
        let server = server.to_string();
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let Ok(mut outbound) = tokio::net::TcpStream::connect(&server).await else { continue };
                let mut cuts = cuts.clone();
                cuts.mark_unchanged();
                tokio::spawn(async move {
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cuts.changed() => {}
                    }
                });
            }
        });
        Relay { port, cut }
    }

    /// Closes every connection made so far; new ones go through.
    fn cut(&self) {
        self.cut.send_modify(|n| *n += 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_reconnects_after_the_database_went_away() {
    let url = postgres_server::fresh_database("cli_reconnect");
    // postgres://user@host:port/database
    let (server, database) = url.split_once("@").unwrap().1.split_once('/').unwrap();
    let relay = Relay::to(server).await;
    let via = format!("postgres://postgres@127.0.0.1:{}/{database}", relay.port);
    let mut broker = Cauldron::start(&data_dir("recorder-pg-reconnect"), &["--recorder-store", &via]).await;
    let p = port(&broker.addr).to_string();
    let at = |tst: i64| json!({"_type": "location", "lat": 50.0, "lon": 8.0, "tst": tst}).to_string();
    let path = "/api/0/locations?user=rita&device=phone&from=2024-01-01&to=2024-04-01";
    publish(&p, "owntracks/rita/phone", &at(1706856000)).await;
    wait_json(&broker.http, path, None, |v| v["count"] == 1).await;
    relay.cut();
    // Acknowledged (mosquitto_pub -q 1 fails without its PUBACK), so stored: on a new connection.
    publish(&p, "owntracks/rita/phone", &at(1706856060)).await;
    broker.logged("connection lost, connecting again").await;
    assert_eq!(wait_json(&broker.http, path, None, |v| v["count"] == 2).await["count"], 2);
}
