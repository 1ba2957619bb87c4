//! History from elsewhere, black-box: `cauldron recorder import` with GPX, GeoJSON, `.rec`,
//! Google Takeout's `Records.json` and the Timeline export, on SQLite and on PostgreSQL; a
//! second import stores nothing again; a broken file imports nothing; `POST /api/0/import`
//! for the owner only, size-limited; ocat's `--dump`/`--load` of keys and friends on both stores.

mod common;
#[path = "../../recorder/tests/support/postgres.rs"]
mod postgres_server;

use common::owntracks::*;
use common::*;
use serde_json::Value;

const FILES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/owntracks/import");

fn file(name: &str) -> String {
    format!("{FILES}/{name}")
}

/// `--data-dir DIR` or `--recorder-store URL`.
type Store = [String; 2];

async fn import(store: &Store, files: &[&str]) -> String {
    let mut args = vec!["recorder", "import", "-u", "jane", "-d", "phone", &store[0], &store[1]];
    let paths: Vec<String> = files.iter().map(|f| file(f)).collect();
    args.extend(paths.iter().map(String::as_str));
    cauldron_cli(&args).await
}

async fn history(store: &Store) -> Value {
    let args = [
        "locations",
        "-u",
        "jane",
        "-d",
        "phone",
        "-F",
        "2023-06-01",
        "-T",
        "2023-06-02",
        &store[0],
        &store[1],
    ];
    serde_json::from_str(&cauldron_cli(&args).await).unwrap()
}

const ALL: &[&str] = &["walk.gpx", "ride.geojson", "Records.json", "Timeline.json", "2023-06.rec"];

async fn every_format_is_imported_once(store: Store) {
    let summary = import(&store, ALL).await;
    let first = summary.lines().next().unwrap();
    // 4 GPX track points and a waypoint, 3 GeoJSON points, 3 Takeout records, 2 visit ends and
    // a raw signal, 3 .rec lines; one GPX point has no time, one Takeout record no position.
    assert_eq!(first, "jane/phone: read 17, stored 15, duplicates 0, rejected 2", "{summary}");
    assert!(summary.contains("walk.gpx: line 11: no <time>"), "{summary}");
    assert!(summary.contains("Records.json: locations[2]: no latitudeE7/longitudeE7"), "{summary}");
    let points = history(&store).await;
    assert_eq!(points["count"], 12, "{points}");
    let first = &points["locations"][0];
    assert_eq!(
        (first["lat"].clone(), first["tst"].clone(), first["alt"].clone()),
        (48.858.into(), 1685606400.into(), 35.into())
    );
    assert_eq!(first["tzname"], "Europe/Paris", "zones are found for imports too");
    let takeout = points["locations"].as_array().unwrap().iter().find(|p| p["tst"] == 1685607060).unwrap();
    assert_eq!((takeout["acc"].clone(), takeout["vel"].clone()), (12.into(), 7.into()), "2 m/s is 7 km/h");
    // The .rec's transition and status are history as the Recorder had them.
    let raw_args =
        ["locations", "-u", "jane", "-d", "phone", "-F", "2023-01-01", "-f", "raw", &store[0], &store[1]];
    let raw = cauldron_cli(&raw_args).await;
    assert!(raw.contains("2023-06-01T09:00:05Z\tevent             \t{\"_type\":\"transition\""), "{raw}");
    assert!(raw.contains("2023-06-01T09:01:00Z\tstatus "), "{raw}");
    assert!(raw.contains("\twaypoint          \t{\"_type\":\"waypoint\""), "{raw}");
    // The newest point is the device's last position.
    let last: Value =
        serde_json::from_str(&cauldron_cli(&["locations", "--last", &store[0], &store[1]]).await).unwrap();
    assert_eq!(last[0]["tst"], 1685610000);

    // Again: everything is already there.
    let again = import(&store, ALL).await;
    assert!(again.starts_with("jane/phone: read 17, stored 0, duplicates 15, rejected 2"), "{again}");
    assert_eq!(history(&store).await["count"], 12);

    // A broken file among good ones: nothing of any is stored, and the file and line are named.
    let mut args = vec!["recorder", "import", "-u", "jane", "-d", "tablet", &store[0], &store[1]];
    let (good, bad) = (file("walk.gpx"), file("broken.gpx"));
    args.extend([good.as_str(), bad.as_str()]);
    let refused = cauldron_cli_fails(&args).await;
    assert!(refused.contains("nothing imported"), "{refused}");
    assert!(refused.contains("broken.gpx: line 5: ill-formed document"), "{refused}");
    let devices = cauldron_cli(&["locations", "--list", "-u", "jane", &store[0], &store[1]]).await;
    assert_eq!(devices.trim(), r#"{"results":["phone"]}"#, "no tablet: nothing was written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_format_is_imported_once_into_sqlite() {
    let dir = data_dir("recorder-import-sqlite");
    every_format_is_imported_once(["--data-dir".into(), dir.display().to_string()]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_format_is_imported_once_into_postgres() {
    let url = postgres_server::fresh_database("cli_import");
    every_format_is_imported_once(["--recorder-store".into(), url]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recorder_history_exported_as_rec_moves_over_whole() {
    // `cauldron locations -f raw` writes the Recorder's .rec lines; importing them into another
    // device gives the same history.
    let dir = data_dir("recorder-import-roundtrip");
    let store: Store = ["--data-dir".into(), dir.display().to_string()];
    import(&store, &["walk.gpx", "2023-06.rec"]).await;
    let raw_of = |device: &'static str| {
        let store = store.clone();
        async move {
            let args = [
                "locations",
                "-u",
                "jane",
                "-d",
                device,
                "-F",
                "2023-01-01",
                "-f",
                "raw",
                &store[0],
                &store[1],
            ];
            cauldron_cli(&args).await
        }
    };
    let exported = raw_of("phone").await;
    let rec = dir.join("2023-06-export.rec");
    std::fs::write(&rec, &exported).unwrap();
    let summary = cauldron_cli(&[
        "recorder",
        "import",
        "-u",
        "jane",
        "-d",
        "old-phone",
        rec.to_str().unwrap(),
        &store[0],
        &store[1],
    ])
    .await;
    assert!(summary.starts_with("jane/old-phone: read 7, stored 7, duplicates 0, rejected 0"), "{summary}");
    assert_eq!(raw_of("old-phone").await, exported);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_owner_imports_over_http_within_the_size_limit() {
    let dir = data_dir("recorder-import-http");
    std::fs::create_dir_all(&dir).unwrap();
    let passwords = dir.join("passwords");
    write_passwords(&passwords, "argon2id", &[("jane", "s3cret"), ("bob", "hunter2")]);
    let broker = Cauldron::start(
        &dir,
        &["--password-file", passwords.to_str().unwrap(), "--recorder-import-limit-mb", "1"],
    )
    .await;
    let (jane, bob) = (basic("jane", "s3cret"), basic("bob", "hunter2"));
    let gpx = std::fs::read(file("walk.gpx")).unwrap();
    let post = |auth: String, path: &'static str, body: Vec<u8>| {
        let http_addr = broker.http.clone();
        async move { http(&http_addr, "POST", path, &[("Authorization", &auth)], &body).await }
    };
    let done = post(jane.clone(), "/api/0/import?user=jane&device=phone", gpx.clone()).await;
    assert_eq!(done.status, 200, "{}", done.body);
    let summary = done.json();
    assert_eq!((summary["read"].clone(), summary["stored"].clone()), (5.into(), 4.into()), "{summary}");
    assert_eq!(summary["rejected"][0]["position"], "line 11");
    let history = wait_json(
        &broker.http,
        "/api/0/locations?user=jane&device=phone&from=2023-06-01&to=2023-06-02",
        Some(&jane),
        |v| v["count"] == 3,
    )
    .await;
    assert_eq!(history["data"][0]["lat"], 48.858);
    // Someone else's device: refused, and nothing stored.
    let theirs = post(bob.clone(), "/api/0/import?user=jane&device=phone", gpx.clone()).await;
    assert_eq!(theirs.status, 403, "{}", theirs.body);
    // A broken file: 400 naming the line, nothing stored.
    let broken = post(
        jane.clone(),
        "/api/0/import?user=jane&device=tablet",
        std::fs::read(file("broken.gpx")).unwrap(),
    )
    .await;
    assert_eq!(broken.status, 400);
    assert!(broken.body.contains("nothing imported: line 5"), "{}", broken.body);
    // Over the limit (1 MiB here): 413 before anything is read.
    let big = [b"<gpx>".to_vec(), vec![b' '; 1 << 21], b"</gpx>".to_vec()].concat();
    assert_eq!(post(jane.clone(), "/api/0/import?user=jane&device=tablet", big).await.status, 413);
    // The format named when the content does not tell it.
    let takeout = std::fs::read(file("Records.json")).unwrap();
    let named = post(jane.clone(), "/api/0/import?user=jane&device=tablet&format=takeout", takeout).await;
    assert_eq!(named.json()["stored"], 2, "{}", named.body);
    let devices = wait_json(&broker.http, "/api/0/list?user=jane", Some(&jane), |_| true).await;
    assert_eq!(devices["results"], serde_json::json!(["phone", "tablet"]));
}

/// `cauldron locations --load=TABLE` with `input` on standard input.
async fn load(store: &Store, table: &str, input: &str) -> std::process::Output {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_cauldron"))
        .args(["locations", "--load", table, &store[0], &store[1]])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input.as_bytes()).await.unwrap();
    child.wait_with_output().await.unwrap()
}

async fn keys_and_friends_dump_and_load(store: Store) {
    // The Recorder's `user-device` keys are read too; dumps write `user/device`.
    let loaded = load(&store, "keys", "jane-phone s3cr1t\nbob/tablet other secret\n").await;
    assert!(loaded.status.success(), "{}", String::from_utf8_lossy(&loaded.stderr));
    let dump = |table: &'static str| {
        let store = store.clone();
        async move { cauldron_cli(&["locations", "--dump", table, &store[0], &store[1]]).await }
    };
    assert_eq!(dump("keys").await, "bob/tablet other secret\njane/phone s3cr1t\n");
    assert!(load(&store, "keys", "bob/tablet DELETE\n").await.status.success());
    assert_eq!(dump("keys").await, "jane/phone s3cr1t\n");
    assert!(load(&store, "friends", "jane/phone [\"john/android\",\"jane/phone\"]\n").await.status.success());
    assert_eq!(dump("friends").await, "jane/phone [\"john/android\",\"jane/phone\"]\n");
    let bad = load(&store, "friends", "jane/phone [\"ok\"]\njohn/android not-json\n").await;
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("line 2: not a JSON array"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    let unknown = cauldron_cli_fails(&["locations", "--dump", "geo", &store[0], &store[1]]).await;
    assert!(unknown.contains("one of keys, friends, ghash"), "{unknown}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_and_friends_dump_and_load_on_sqlite() {
    let dir = data_dir("recorder-dump-sqlite");
    keys_and_friends_dump_and_load(["--data-dir".into(), dir.display().to_string()]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_and_friends_dump_and_load_on_postgres() {
    let url = postgres_server::fresh_database("cli_dump");
    keys_and_friends_dump_and_load(["--recorder-store".into(), url]).await;
}
