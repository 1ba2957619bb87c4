//! The OwnTracks recorder, black-box: messages from real clients (mosquitto_pub, paho-mqtt)
//! into `cauldron serve`, read back through the Recorder API, `/ws/last`, HTTP mode and
//! `cauldron locations`; encryption against PyNaCl; per-user isolation; the standalone
//! recorder against Mosquitto 2.0.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::process::Command;

const OWNTRACKS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/owntracks");
const CRYPTO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/owntracks_crypto.py");
/// The day of the reference's example location.
const DAY: &str = "from=2024-02-01&to=2024-02-03";

fn port(addr: &str) -> &str {
    addr.rsplit(':').next().unwrap()
}

async fn mosquitto_pub(port: &str, args: &[&str]) {
    let status = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", port])
        .args(args)
        .status()
        .await
        .unwrap();
    assert!(status.success(), "mosquitto_pub {args:?}");
}

/// Publishes a JSON payload at QoS 1.
async fn publish(port: &str, topic: &str, payload: &str) {
    mosquitto_pub(port, &["-q", "1", "-t", topic, "-m", payload]).await;
}

/// Polls a GET until `done` holds for its JSON (ingest is asynchronous), then returns it.
async fn wait_json(http_addr: &str, path: &str, auth: Option<&str>, done: impl Fn(&Value) -> bool) -> Value {
    let headers: Vec<(&str, &str)> = auth.map(|a| vec![("Authorization", a)]).unwrap_or_default();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let response = http(http_addr, "GET", path, &headers, b"").await;
        if response.status == 200 {
            let value = response.json();
            if done(&value) {
                return value;
            }
            if tokio::time::Instant::now() > deadline {
                panic!("{path}: still {value}");
            }
        } else if tokio::time::Instant::now() > deadline {
            panic!("{path}: {} {}", response.status, response.body);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn cauldron_cli(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_cauldron")).args(args).output().await.unwrap();
    assert!(out.status.success(), "cauldron {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// `cauldron locations -u USER -d DEVICE ARGS --data-dir DATA`.
async fn locations(data: &str, user: &str, device: &str, args: &[&str]) -> String {
    let mut all = vec!["locations", "-u", user, "-d", device, "--data-dir", data];
    all.extend_from_slice(args);
    cauldron_cli(&all).await
}

async fn python(args: &[&str]) -> String {
    let out = Command::new("python3").arg(CRYPTO).args(args).output().await.unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn example(name: &str) -> String {
    std::fs::read_to_string(Path::new(OWNTRACKS).join(name)).unwrap().trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_message_type_from_mosquitto_pub_is_recorded() {
    let dir = data_dir("recorder-types");
    let broker = Cauldron::start(&dir, &[]).await;
    let p = port(&broker.addr);
    let base = "owntracks/Jane/Nokia"; // stored lowercased
    let face =
        "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==";
    mosquitto_pub(
        p,
        &[
            "-q",
            "2",
            "-r",
            "-t",
            &format!("{base}/info"),
            "-m",
            &json!({"_type": "card", "tid": "j1", "name": "Jane Jolie", "face": face}).to_string(),
        ],
    )
    .await;
    publish(p, base, &example("location.json")).await;
    publish(p, &format!("{base}/event"), &example("transition.json")).await;
    publish(p, &format!("{base}/cmd"), &example("cmd.json")).await;
    let others = [
        (
            "waypoint",
            r#"{"_type":"waypoint","desc":"Home","lat":48.85,"lon":2.29,"rad":50,"tst":1706856100}"#,
        ),
        (
            "waypoints",
            r#"{"_type":"waypoints","_creator":"test","waypoints":[{"_type":"waypoint","desc":"Home","lat":48.85,"lon":2.29,"rad":50,"tst":1706856100}]}"#,
        ),
        ("status", r#"{"_type":"status","android":{"hib":1,"bo":1,"loc":0,"ps":0,"wifi":1},"_id":"a1"}"#),
        ("step", r#"{"_type":"steps","tst":1706856300,"steps":120,"from":1706850000,"to":1706856000}"#),
        (
            "beacon",
            r#"{"_type":"beacon","desc":"Desk","uuid":"CA271EAE-5FA8-4E80-8F08-2A302A95A959","major":1,"minor":2,"tst":1706856301,"acc":1,"rssi":-60,"prox":1}"#,
        ),
        (
            "dump",
            r#"{"_type":"dump","configuration":{"_type":"configuration","mode":0,"host":"broker.example"}}"#,
        ),
        ("raw", "not json at all"),
    ];
    for (sub, payload) in others {
        publish(p, &format!("{base}/{sub}"), payload).await;
    }
    publish(p, base, r#"{"_type":"lwt","tst":1706856000}"#).await;
    publish(
        p,
        "owntracks/ping/ping",
        r#"{"_type":"location","lat":0.5,"lon":0.5,"tst":1706856000,"tid":"pp"}"#,
    )
    .await;
    // Two levels: not an OwnTracks topic, ignored.
    publish(p, "owntracks/nobody", r#"{"_type":"location","lat":1,"lon":1,"tst":1706856000}"#).await;

    // last: the location with the card's name and face, and the Recorder's added fields.
    let last = wait_json(&broker.http, "/api/0/last?user=jane", None, |v| v[0]["name"] == "Jane Jolie").await;
    let last = last.as_array().unwrap();
    assert_eq!(last.len(), 1);
    let jane = &last[0];
    for (key, value) in [
        ("username", json!("jane")),
        ("device", json!("nokia")),
        ("topic", json!("owntracks/jane/nokia")),
        ("tid", json!("j1")),
        ("lat", json!(48.856826)),
        ("lon", json!(2.292713)),
        ("tst", json!(1706856298)),
        ("isotst", json!("2024-02-02T06:44:58Z")),
        ("disptst", json!("2024-02-02 06:44:58")),
        ("SSID", json!("mywifi")),
        ("batt", json!(53)),
        ("face", json!(face)),
        ("_type", json!("location")),
    ] {
        assert_eq!(jane[key], value, "last.{key}");
    }
    // Users: jane and the ping health check; not the two-level topic.
    let users = wait_json(&broker.http, "/api/0/list", None, |_| true).await;
    assert_eq!(users, json!({"results": ["jane", "ping"]}));
    assert_eq!(
        wait_json(&broker.http, "/api/0/list?user=jane", None, |_| true).await,
        json!({"results": ["nokia"]})
    );
    assert_eq!(
        wait_json(&broker.http, "/api/0/list?user=jane&device=nokia", None, |_| true).await["results"][0],
        "rec/jane/nokia/2024-02.rec"
    );
    // locations: only the location, with isorcv; ping/ping has a last position but no history.
    let history =
        wait_json(&broker.http, &format!("/api/0/locations?user=jane&device=nokia&{DAY}"), None, |_| true)
            .await;
    assert_eq!(history["count"], 1);
    assert_eq!(history["status"], 200);
    assert_eq!(history["data"][0]["vel"], 0);
    assert!(history["data"][0]["isorcv"].as_str().unwrap().ends_with('Z'));
    let ping = wait_json(&broker.http, "/api/0/last?user=ping&device=ping", None, |_| true).await;
    assert_eq!(ping[0]["tid"], "pp");
    let ping_history =
        wait_json(&broker.http, &format!("/api/0/locations?user=ping&device=ping&{DAY}"), None, |_| true)
            .await;
    assert_eq!(ping_history["count"], 0);

    // Every other type is in the history as the Recorder's .rec lines have it.
    let data = dir.to_str().unwrap();
    let raw =
        locations(data, "jane", "nokia", &["--from", "2000-01-01", "--to", "2100-01-01", "--format", "raw"])
            .await;
    for expected in [
        "\t*                 \t{\"SSID\"",
        "\tevent             \t{\"_type\":\"transition\"",
        "\tcmd ",
        "\twaypoint ",
        "\tstatus ",
        "\tstep ",
        "\tbeacon ",
        "\traw ",
        "\tnot json at all\n",
        "\tlwt ",
    ] {
        assert!(raw.contains(expected), "no {expected:?} in\n{raw}");
    }
    assert!(raw.contains("2024-02-02T06:44:58Z\t*"), "records carry the fix time: {raw}");
    // Cards, waypoint exports and configuration dumps have their own places, not the history.
    assert!(
        !raw.contains("\"card\"") && !raw.contains("\"_creator\"") && !raw.contains("broker.example"),
        "{raw}"
    );

    // Formats of `cauldron locations` and the API agree.
    let gpx = locations(data, "jane", "nokia", &["-F", "2024-02-01", "-T", "2024-02-03", "-f", "gpx"]).await;
    assert!(
        gpx.contains(
            r#"<trkpt lat="48.856826" lon="2.292713"><ele>154</ele><time>2024-02-02T06:44:58Z</time></trkpt>"#
        ),
        "{gpx}"
    );
    let api_gpx = http(
        &broker.http,
        "GET",
        &format!("/api/0/locations?user=jane&device=nokia&{DAY}&format=gpx"),
        &[],
        b"",
    )
    .await;
    assert_eq!(api_gpx.header("content-type"), Some("application/gpx+xml"));
    assert_eq!(api_gpx.body, gpx);
    let csv = http(
        &broker.http,
        "GET",
        &format!("/api/0/locations?user=jane&device=nokia&{DAY}&format=csv&fields=tst,lat,lon"),
        &[],
        b"",
    )
    .await;
    assert_eq!(csv.body, "tst,lat,lon\n1706856298,48.856826,2.292713\n");
    let json = locations(data, "jane", "nokia", &["-F", "2024-02-01", "-T", "2024-02-03"]).await;
    let json: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(json["count"], 1);
    assert_eq!(json["locations"][0]["tst"], 1706856298);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_parameters_status_codes_and_formats() {
    let dir = data_dir("recorder-api");
    let broker = Cauldron::start(&dir, &[]).await;
    let p = port(&broker.addr);
    for (i, (lat, lon)) in [(48.85, 2.29), (48.86, 2.30), (48.87, 2.31)].iter().enumerate() {
        let point = json!({"_type": "location", "lat": lat, "lon": lon, "tst": 1706856000 + i as i64 * 60, "tid": "jp"});
        publish(p, "owntracks/jane/phone", &point.to_string()).await;
    }
    publish(
        p,
        "owntracks/jane/phone",
        r#"{"_type":"location","lat":48.88,"lon":2.32,"tst":1706856500,"poi":"Cafe"}"#,
    )
    .await;
    let path = format!("/api/0/locations?user=jane&device=phone&{DAY}");
    let all = wait_json(&broker.http, &path, None, |v| v["count"] == 4).await;
    let tsts: Vec<_> = all["data"].as_array().unwrap().iter().map(|p| p["tst"].as_i64().unwrap()).collect();
    assert_eq!(tsts, [1706856000, 1706856060, 1706856120, 1706856500]);
    // limit: the newest N in range; fields: only those keys.
    let limited = wait_json(&broker.http, &format!("{path}&limit=2&fields=tst,lat"), None, |_| true).await;
    assert_eq!(
        limited["data"],
        json!([{"tst": 1706856120, "lat": 48.87}, {"tst": 1706856500, "lat": 48.88}])
    );
    // from/to are exclusive (06:40:00 and 06:42:00 stay out) and take every Recorder time
    // format; X-Limit-* headers and form bodies work like query parameters.
    let narrow = http(
        &broker.http,
        "GET",
        "/api/0/locations?from=2024-02-02T06:40:00&to=2024-02-02T06:42",
        &[("X-Limit-User", "jane"), ("X-Limit-Device", "phone")],
        b"",
    )
    .await
    .json();
    assert_eq!(narrow["count"], 1, "{narrow}");
    assert_eq!(narrow["data"][0]["tst"], 1706856060);
    let form = http(
        &broker.http,
        "POST",
        "/api/0/locations",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        b"user=jane&device=phone&from=2024-02-02T06&to=2024-02-02T07&limit=1",
    )
    .await;
    assert_eq!(form.json()["data"][0]["tst"], 1706856500);
    assert_eq!(form.header("access-control-allow-origin"), Some("*"));
    // geojson, geojsonpoi, linestring, xml.
    let geo = http(&broker.http, "GET", &format!("{path}&format=geojson"), &[], b"").await.json();
    assert_eq!(geo["type"], "FeatureCollection");
    assert_eq!(geo["features"][0]["geometry"], json!({"type": "Point", "coordinates": [2.29, 48.85]}));
    assert_eq!(geo["features"][0]["properties"]["name"], "jp");
    let poi = http(&broker.http, "GET", &format!("{path}&format=geojsonpoi"), &[], b"").await.json();
    assert_eq!(poi["features"].as_array().unwrap().len(), 1);
    assert_eq!(poi["features"][0]["properties"]["name"], "Cafe");
    let line = http(&broker.http, "GET", &format!("{path}&format=linestring"), &[], b"").await.json();
    assert_eq!(line["geometry"]["coordinates"].as_array().unwrap().len(), 4);
    let xml = http(&broker.http, "GET", &format!("{path}&format=xml"), &[], b"").await;
    assert!(xml.body.contains("<owntracks>") && xml.body.contains("poi=\"Cafe\""), "{}", xml.body);
    // Errors as the Recorder answers them.
    assert_eq!(http(&broker.http, "GET", &format!("{path}&format=kml"), &[], b"").await.status, 400);
    assert_eq!(http(&broker.http, "GET", "/api/0/locations?user=jane", &[], b"").await.status, 416);
    assert_eq!(
        http(
            &broker.http,
            "GET",
            "/api/0/locations?user=jane&device=phone&from=2024-03-01&to=2024-02-01",
            &[],
            b""
        )
        .await
        .status,
        416
    );
    // Default range is the last 6 hours: these 2024 points are outside it.
    assert_eq!(
        http(&broker.http, "GET", "/api/0/locations?user=jane&device=phone", &[], b"").await.json()["count"],
        0
    );
    let version = http(&broker.http, "GET", "/api/0/version", &[], b"").await.json();
    assert!(version["version"].is_string());
    assert_eq!(http(&broker.http, "GET", "/api/0/q?lat=1&lon=2", &[], b"").await.json(), json!({}));
    let monitor = http(&broker.http, "GET", "/api/0/monitor", &[], b"").await;
    assert!(monitor.body.trim_end().ends_with(" owntracks/jane/phone"), "{}", monitor.body);
    let photo = http(&broker.http, "GET", "/api/0/photo?user=jane", &[], b"").await;
    assert_eq!((photo.status, photo.header("content-type")), (200, Some("image/png")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redelivered_locations_are_stored_once_and_last_only_moves_forward() {
    let dir = data_dir("recorder-dedup");
    let broker = Cauldron::start(&dir, &[]).await;
    let p = port(&broker.addr);
    let at =
        |tst: i64| json!({"_type": "location", "lat": 50.0, "lon": 8.0, "tst": tst, "tid": "dd"}).to_string();
    publish(p, "owntracks/dave/phone", &at(1706856000)).await;
    publish(p, "owntracks/dave/phone", &at(1706856000)).await; // a QoS 1 redelivery
    publish(p, "owntracks/dave/phone", &at(1706856600)).await;
    publish(p, "owntracks/dave/phone", &at(1706856300)).await; // late: history yes, last no
    let path = format!("/api/0/locations?user=dave&device=phone&{DAY}");
    let history = wait_json(&broker.http, &path, None, |v| v["count"] == 3).await;
    assert_eq!(history["count"], 3);
    let last = wait_json(&broker.http, "/api/0/last", None, |_| true).await;
    assert_eq!(last[0]["tst"], 1706856600);
    // The same point over HTTP mode (a retry) is not stored again either.
    let post = http(
        &broker.http,
        "POST",
        "/pub?u=dave&d=phone",
        &[("Content-Type", "application/json")],
        at(1706856600).as_bytes(),
    )
    .await;
    assert_eq!(post.status, 200);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(wait_json(&broker.http, &path, None, |_| true).await["count"], 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payloads_encrypted_by_pynacl_are_decrypted_with_the_device_key() {
    let dir = data_dir("recorder-crypto");
    let data = dir.to_str().unwrap().to_string();
    cauldron_cli(&["recorder", "keys", "set", "Eve", "Phone", "s3cr1t-of-eve", "--data-dir", &data]).await;
    let broker = Cauldron::start(&dir, &[]).await;
    let location = example("location.json");
    python(&["publish", "127.0.0.1", port(&broker.addr), "s3cr1t-of-eve", "owntracks/eve/phone", &location])
        .await;
    let last = wait_json(&broker.http, "/api/0/last?user=eve", None, |v| {
        v.as_array().is_some_and(|a| !a.is_empty())
    })
    .await;
    assert_eq!(last[0]["_decrypted"], true);
    assert_eq!(last[0]["lat"], 48.856826);
    assert_eq!(last[0]["SSID"], "mywifi");
    // Without the key the message is kept, still encrypted, and is no location.
    python(&["publish", "127.0.0.1", port(&broker.addr), "other-key", "owntracks/eve/tablet", &location])
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let raw = locations(&data, "eve", "tablet", &["-F", "2000-01-01", "-T", "2100-01-01", "-f", "raw"]).await;
    assert!(raw.contains("\"_type\":\"encrypted\""), "{raw}");
    // HTTP mode answers an encrypted device encrypted; PyNaCl opens it.
    let sealed = python(&["seal", "s3cr1t-of-eve", &location]).await;
    let answer = http(
        &broker.http,
        "POST",
        "/pub?u=eve&d=phone",
        &[("Content-Type", "application/json")],
        sealed.as_bytes(),
    )
    .await
    .json();
    assert_eq!(answer["_type"], "encrypted");
    let plain: Value =
        serde_json::from_str(&python(&["open", "s3cr1t-of-eve", answer["data"].as_str().unwrap()]).await)
            .unwrap();
    assert_eq!(plain[0]["_type"], "location");
    assert_eq!(plain[0]["topic"], "owntracks/eve/phone");
    cauldron_cli(&["recorder", "keys", "delete", "eve", "phone", "--data-dir", &data]).await;
}

/// jane may read john; john reads only himself; admin reads everyone.
fn users(dir: &Path) -> (String, String) {
    std::fs::create_dir_all(dir).unwrap();
    let passwords = dir.join("passwd");
    let acl = dir.join("acl");
    std::fs::write(&passwords, "").unwrap();
    for (user, password) in [("jane", "jane-pw"), ("john", "john-pw"), ("admin", "admin-pw")] {
        let status = std::process::Command::new("mosquitto_passwd")
            .arg("-b")
            .arg(&passwords)
            .args([user, password])
            .status()
            .unwrap();
        assert!(status.success());
    }
    std::fs::write(
        &acl,
        "user jane\ntopic readwrite owntracks/jane/#\ntopic read owntracks/john/+\n\n\
        user john\ntopic readwrite owntracks/john/#\n\nuser admin\ntopic read owntracks/#\n",
    )
    .unwrap();
    (passwords.display().to_string(), acl.display().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_mode_friends_come_from_the_acl_and_users_see_only_what_they_may_read() {
    let dir = data_dir("recorder-users");
    let (passwords, acl) = users(&dir);
    let broker = Cauldron::start(
        &dir,
        &["--password-file", &passwords, "--acl-file", &acl, "--recorder-admin", "admin"],
    )
    .await;
    let (jane, john, admin) =
        (basic("jane", "jane-pw"), basic("john", "john-pw"), basic("admin", "admin-pw"));
    let post = |auth: String, device: &'static str, body: Value| {
        let http_addr = broker.http.clone();
        async move {
            let headers = [
                ("Authorization", auth.as_str()),
                ("Content-Type", "application/json"),
                ("X-Limit-D", device),
            ];
            http(&http_addr, "POST", "/pub", &headers, body.to_string().as_bytes()).await
        }
    };
    let location =
        |tst: i64, tid: &str| json!({"_type": "location", "lat": 52.5, "lon": 13.4, "tst": tst, "tid": tid});

    // HTTP mode: john sees himself only; a card and location of jane, then her friends.
    let answer = post(john.clone(), "phone", location(1706856000, "jo")).await;
    assert_eq!(answer.status, 200);
    assert_eq!(
        answer.json(),
        json!([{"_type": "location", "tid": "jo", "lat": 52.5, "lon": 13.4, "tst": 1706856000, "topic": "owntracks/john/phone"}])
    );
    let card = json!({"_type": "card", "tid": "ja", "name": "Jane", "face": "iVBORw0KGgo="});
    assert_eq!(post(jane.clone(), "phone", card).await.status, 200);
    // The user is who logged in: an X-Limit-U header naming john does not make jane john.
    let headers = [("Authorization", jane.as_str()), ("X-Limit-U", "john"), ("X-Limit-D", "phone")];
    let answer =
        http(&broker.http, "POST", "/pub", &headers, location(1706856100, "ja").to_string().as_bytes())
            .await
            .json();
    let types: Vec<(&str, &str)> = answer
        .as_array()
        .unwrap()
        .iter()
        .map(|o| (o["_type"].as_str().unwrap(), o["tid"].as_str().unwrap()))
        .collect();
    assert_eq!(types, [("card", "ja"), ("location", "ja"), ("location", "jo")], "{answer}");
    assert_eq!(answer[0]["name"], "Jane");
    // What jane posted is published for MQTT-mode friends too: her location, retained, where the
    // app would have published it.
    let mqtt = Command::new("mosquitto_sub")
        .args(["-p", port(&broker.addr), "-u", "admin", "-P", "admin-pw", "-t", "owntracks/jane/phone"])
        .args(["-C", "1", "-W", "5", "-F", "%r %p"])
        .output()
        .await
        .unwrap();
    let line = String::from_utf8_lossy(&mqtt.stdout);
    assert!(line.starts_with("1 {") && line.contains("\"tid\":\"ja\""), "{line}");
    // Wrong or missing password: 401 and nothing stored; the map page needs a login too.
    assert_eq!(post(basic("jane", "wrong"), "phone", location(1706856200, "xx")).await.status, 401);
    assert_eq!(http(&broker.http, "GET", "/api/0/last", &[], b"").await.status, 401);
    let page = http(&broker.http, "GET", "/", &[], b"").await;
    assert_eq!((page.status, page.header("www-authenticate").is_some()), (401, true));
    assert_eq!(http(&broker.http, "GET", "/", &[("Authorization", &jane)], b"").await.status, 200);
    // Friends set by hand replace the ACL's for that device: jane's phone now sees only itself.
    let data = dir.to_str().unwrap();
    cauldron_cli(&["recorder", "friends", "set", "jane", "phone", "jane/phone", "--data-dir", data]).await;
    let answer = post(jane.clone(), "phone", json!({"_type": "status"})).await.json();
    let tids: Vec<&str> = answer.as_array().unwrap().iter().map(|o| o["tid"].as_str().unwrap()).collect();
    assert_eq!(tids, ["ja", "ja"], "{answer}");
    cauldron_cli(&["recorder", "friends", "delete", "jane", "phone", "--data-dir", data]).await;

    // Isolation: the API and the WebSocket show each user what the ACL lets them read.
    let lasts = |v: &Value| {
        v.as_array()
            .unwrap()
            .iter()
            .map(|o| format!("{}/{}", o["username"].as_str().unwrap(), o["device"].as_str().unwrap()))
            .collect::<Vec<_>>()
    };
    assert_eq!(lasts(&wait_json(&broker.http, "/api/0/last", Some(&john), |_| true).await), ["john/phone"]);
    assert_eq!(
        lasts(&wait_json(&broker.http, "/api/0/last", Some(&jane), |_| true).await),
        ["jane/phone", "john/phone"]
    );
    assert_eq!(
        lasts(&wait_json(&broker.http, "/api/0/last", Some(&admin), |_| true).await),
        ["jane/phone", "john/phone"]
    );
    assert_eq!(
        wait_json(&broker.http, "/api/0/list", Some(&john), |_| true).await,
        json!({"results": ["john"]})
    );
    let janes = format!("/api/0/locations?user=jane&device=phone&{DAY}");
    assert_eq!(http(&broker.http, "GET", &janes, &[("Authorization", &john)], b"").await.status, 403);
    assert_eq!(wait_json(&broker.http, &janes, Some(&jane), |_| true).await["count"], 1);
    assert_eq!(wait_json(&broker.http, &janes, Some(&admin), |_| true).await["count"], 1);

    // /ws/last as john: LAST gives his device only; jane's new point is not pushed to him,
    // his own is.
    let mut socket = websocket(&broker.http, &john).await;
    socket.send(tokio_tungstenite::tungstenite::Message::text("LAST")).await.unwrap();
    let first = next_json(&mut socket).await;
    assert_eq!((first["username"].as_str(), first["tid"].as_str()), (Some("john"), Some("jo")));
    post(jane.clone(), "phone", location(1706856300, "ja")).await;
    post(john.clone(), "phone", location(1706856400, "jo")).await;
    let pushed = next_json(&mut socket).await;
    assert_eq!((pushed["username"].as_str(), pushed["tst"].as_i64()), (Some("john"), Some(1706856400)));

    // Deleting: not someone else's points; your own, by time, and last falls back.
    let delete = |auth: String, query: &'static str| {
        let http_addr = broker.http.clone();
        async move {
            http(
                &http_addr,
                "DELETE",
                &format!("/api/0/locations?{query}"),
                &[("Authorization", auth.as_str())],
                b"",
            )
            .await
        }
    };
    assert_eq!(delete(jane.clone(), "user=john&device=phone&tst=1706856400").await.status, 403);
    assert_eq!(delete(john.clone(), "user=john&device=phone").await.status, 400, "no range: nothing deleted");
    let deleted = delete(john.clone(), "user=john&device=phone&tst=1706856400").await;
    assert_eq!(deleted.json(), json!({"deleted": 1}));
    let last = wait_json(&broker.http, "/api/0/last", Some(&john), |_| true).await;
    assert_eq!(last[0]["tst"], 1706856000);
    // An admin deletes a whole device.
    let gone = http(
        &broker.http,
        "DELETE",
        "/api/0/device?user=jane&device=phone",
        &[("Authorization", &admin)],
        b"",
    )
    .await;
    assert_eq!(gone.json(), json!({"deleted": 3}), "two locations and the status record");
    assert_eq!(lasts(&wait_json(&broker.http, "/api/0/last", Some(&admin), |_| true).await), ["john/phone"]);
}

type Socket = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

async fn websocket(http_addr: &str, auth: &str) -> Socket {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = format!("ws://{http_addr}/ws/last").into_client_request().unwrap();
    request.headers_mut().insert("Authorization", auth.parse().unwrap());
    let stream = tokio::net::TcpStream::connect(http_addr).await.unwrap();
    tokio_tungstenite::client_async(request, stream).await.expect("WebSocket handshake").0
}

async fn next_json(socket: &mut Socket) -> Value {
    let message = tokio::time::timeout(WAIT, socket.next()).await.expect("a push").unwrap().unwrap();
    serde_json::from_str(message.to_text().unwrap()).unwrap()
}

/// `cauldron recorder` as a child process.
async fn standalone(dir: &Path, broker: &str, http_port: u16, extra: &[&str]) -> tokio::process::Child {
    let child = Command::new(env!("CARGO_BIN_EXE_cauldron"))
        .args(["recorder", "--broker", broker, "--client-id", "recorder-test"])
        .args(["--http", &format!("127.0.0.1:{http_port}"), "--data-dir"])
        .arg(dir)
        .args(extra)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // Subscribed once the API answers and a moment has passed for the SUBACK.
    let deadline = tokio::time::Instant::now() + WAIT;
    while tokio::net::TcpStream::connect(("127.0.0.1", http_port)).await.is_err() {
        assert!(tokio::time::Instant::now() < deadline, "recorder did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    child
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_recorder_keeps_a_persistent_session_with_mosquitto() {
    let dir = data_dir("recorder-standalone");
    let mosquitto = Mosquitto::start(&dir.join("mosquitto"), "allow_anonymous true\n").await;
    let p = mosquitto.port.to_string();
    // A retained position from before the recorder existed is not history.
    mosquitto_pub(
        &p,
        &[
            "-r",
            "-q",
            "1",
            "-t",
            "owntracks/old/phone",
            "-m",
            r#"{"_type":"location","lat":1,"lon":1,"tst":1706850000}"#,
        ],
    )
    .await;
    let http_port = free_port();
    let http_addr = format!("127.0.0.1:{http_port}");
    let mut recorder =
        standalone(&dir.join("store"), &format!("mqtt://127.0.0.1:{}", mosquitto.port), http_port, &[]).await;
    mosquitto_pub(&p, &["-q", "2", "-t", "owntracks/Mo/phone", "-m", &example("location.json")]).await;
    let path = format!("/api/0/locations?user=mo&device=phone&{DAY}");
    wait_json(&http_addr, &path, None, |v| v["count"] == 1).await;
    // Stopped (SIGINT), a QoS 1 location arrives; on restart the session hands it over.
    let pid = recorder.id().unwrap().to_string();
    Command::new("kill").args(["-INT", &pid]).status().await.unwrap();
    tokio::time::timeout(WAIT, recorder.wait()).await.expect("recorder exits on SIGINT").unwrap();
    mosquitto_pub(
        &p,
        &[
            "-q",
            "1",
            "-t",
            "owntracks/mo/phone",
            "-m",
            r#"{"_type":"location","lat":48.9,"lon":2.3,"tst":1706859999}"#,
        ],
    )
    .await;
    let _recorder =
        standalone(&dir.join("store"), &format!("mqtt://127.0.0.1:{}", mosquitto.port), http_port, &[]).await;
    let history = wait_json(&http_addr, &path, None, |v| v["count"] == 2).await;
    assert_eq!(history["data"][1]["tst"], 1706859999);
    assert_eq!(wait_json(&http_addr, "/api/0/list", None, |_| true).await, json!({"results": ["mo"]}));
}

/// Debian's Chromium, headless, as this machine allows it (no sandbox as root, no background
/// connections to a closed network).
fn chromium(profile: &Path) -> Command {
    let mut command = Command::new("chromium");
    command
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run"])
        .args(["--disable-background-networking", "--disable-component-update", "--disable-sync"])
        .args(["--window-size=1200,800", "--virtual-time-budget=5000"])
        .arg(format!("--user-data-dir={}", profile.display()))
        .kill_on_drop(true);
    command
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn map_page_shows_markers_and_a_track_in_headless_chromium() {
    let dir = data_dir("recorder-map");
    // An unreachable tile server: the page must still show its own data.
    let broker = Cauldron::start(&dir, &["--tile-url", "http://127.0.0.1:9/{z}/{x}/{y}.png"]).await;
    let p = port(&broker.addr);
    for i in 0..3 {
        let point = json!({"_type": "location", "lat": 48.85 + i as f64 * 0.01, "lon": 2.29 + i as f64 * 0.01,
            "tst": 1706856000 + i * 600, "acc": 40, "tid": "jp"});
        publish(p, "owntracks/jane/phone", &point.to_string()).await;
    }
    publish(
        p,
        "owntracks/john/tablet",
        r#"{"_type":"location","lat":52.52,"lon":13.40,"tst":1706856000,"tid":"jt"}"#,
    )
    .await;
    mosquitto_pub(
        p,
        &[
            "-r",
            "-t",
            "owntracks/jane/phone/info",
            "-m",
            r#"{"_type":"card","tid":"jp","name":"Jane <b>Jolie</b>"}"#,
        ],
    )
    .await;
    wait_json(&broker.http, "/api/0/last", None, |v| {
        v.as_array().unwrap().len() == 2 && v[0]["name"].is_string()
    })
    .await;

    let url = format!("http://{}/?user=jane&device=phone&from=2024-02-01&to=2024-02-03", broker.http);
    let out = chromium(&dir.join("profile"))
        .arg("--dump-dom")
        .arg(&url)
        .output()
        .await
        .expect("chromium is installed by the test command");
    let dom = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // A marker (with its accuracy circle) per device, the list of devices, and the track of
    // three points.
    assert_eq!(dom.matches("class=\"marker\"").count(), 2, "{dom}");
    assert!(
        dom.contains("data-device=\"jane/phone\"") && dom.contains("data-device=\"john/tablet\""),
        "{dom}"
    );
    assert_eq!(dom.matches("class=\"accuracy\"").count(), 1, "only jane reported an accuracy");
    let track = dom.split("<polyline class=\"track\" points=\"").nth(1).expect("a track is drawn");
    assert_eq!(track.split('"').next().unwrap().split(' ').count(), 3, "three points in the line");
    assert_eq!(dom.matches("class=\"point\"").count(), 3);
    assert!(dom.contains("3 points of jane/phone"), "{dom}");
    // The card name is shown as text, never as markup.
    assert!(dom.contains("Jane &lt;b&gt;Jolie&lt;/b&gt;"), "{dom}");

    // The screenshot, kept as an artifact of the test run.
    let artifacts = Path::new(env!("CARGO_TARGET_TMPDIR")).join("test-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let shot = artifacts.join("map.png");
    let _ = std::fs::remove_file(&shot);
    let status = chromium(&dir.join("profile"))
        .arg(format!("--screenshot={}", shot.display()))
        .arg(&url)
        .output()
        .await
        .unwrap();
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
    let png = std::fs::read(&shot).expect("a screenshot");
    assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000, "a real screenshot, {} bytes", png.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_recorder_means_no_store_api_or_map() {
    let dir = data_dir("recorder-off");
    let broker = Cauldron::start(&dir, &["--no-recorder"]).await;
    publish(port(&broker.addr), "owntracks/jane/phone", &example("location.json")).await;
    assert_eq!(http(&broker.http, "GET", "/api/0/last", &[], b"").await.status, 404);
    assert_eq!(http(&broker.http, "GET", "/", &[], b"").await.status, 404);
    assert_eq!(http(&broker.http, "GET", "/healthz", &[], b"").await.status, 200);
    assert!(!dir.join("recorder.sqlite").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_recorder_speaks_mqtts_with_a_ca_file() {
    let dir = data_dir("recorder-mqtts");
    let pki = pki(&dir);
    let conf = format!(
        "allow_anonymous true\ncafile {}\ncertfile {}\nkeyfile {}\n",
        pki.ca.display(),
        pki.server_cert.display(),
        pki.server_key.display()
    );
    let mosquitto = Mosquitto::start(&dir.join("mosquitto"), &conf).await;
    let http_port = free_port();
    let ca = pki.ca.display().to_string();
    let url = format!("mqtts://127.0.0.1:{}", mosquitto.port);
    let _recorder = standalone(&dir.join("store"), &url, http_port, &["--cafile", &ca]).await;
    let status = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &mosquitto.port.to_string(), "--cafile", &ca, "-q", "1"])
        .args(["-t", "owntracks/tls/phone", "-m", &example("location.json")])
        .status()
        .await
        .unwrap();
    assert!(status.success());
    let http_addr = format!("127.0.0.1:{http_port}");
    let last =
        wait_json(&http_addr, "/api/0/last", None, |v| v.as_array().is_some_and(|a| !a.is_empty())).await;
    assert_eq!(last[0]["topic"], "owntracks/tls/phone");
}

/// Exactly the calls owntracks/frontend makes (its src/api.js), in its formats.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_calls_of_owntracks_frontend_are_answered_in_its_shapes() {
    let dir = data_dir("recorder-frontend");
    let broker = Cauldron::start(&dir, &[]).await;
    publish(port(&broker.addr), "owntracks/jane/phone", &example("location.json")).await;
    let h = broker.http.as_str();
    let last = wait_json(h, "/api/0/last?user=jane&device=phone", None, |v| {
        v.as_array().is_some_and(|a| a.len() == 1)
    })
    .await;
    assert_eq!((last[0]["lat"].as_f64(), last[0]["tid"].as_str()), (Some(48.856826), Some("j1")));
    let every = [
        "/api/0/version",
        "/api/0/list",
        "/api/0/list?user=jane",
        "/api/0/last?user=jane&device=phone",
        "/api/0/locations?from=2024-02-01T00:00:00&to=2024-02-02T23:59:59&user=jane&device=phone&format=json",
    ];
    for path in every {
        let response = http(h, "GET", path, &[], b"").await;
        assert_eq!(response.status, 200, "{path}");
        assert_eq!(response.header("access-control-allow-origin"), Some("*"), "{path}: usable cross-origin");
        assert_eq!(response.header("content-type"), Some("application/json"), "{path}");
    }
    assert_eq!(http(h, "GET", every[1], &[], b"").await.json(), json!({"results": ["jane"]}));
    assert_eq!(http(h, "GET", every[2], &[], b"").await.json(), json!({"results": ["phone"]}));
    let data = http(h, "GET", every[4], &[], b"").await.json();
    assert_eq!(data["data"][0]["tst"], 1706856298);
    // /ws/last: LAST, then a reload-worthy location push. A second socket filtered to another
    // user gets neither.
    let open = |query: &'static str| async move {
        let stream = tokio::net::TcpStream::connect(h).await.unwrap();
        let url = format!("ws://{h}/ws/last{query}");
        let (mut socket, _) = tokio_tungstenite::client_async(url, stream).await.unwrap();
        socket.send(tokio_tungstenite::tungstenite::Message::text("LAST")).await.unwrap();
        socket
    };
    let mut socket = open("").await;
    let mut johns = open("?user=john").await;
    assert_eq!(next_json(&mut socket).await["_type"], "location");
    publish(
        port(&broker.addr),
        "owntracks/jane/phone",
        r#"{"_type":"location","lat":48.9,"lon":2.3,"tst":1706857000}"#,
    )
    .await;
    let pushed = next_json(&mut socket).await;
    assert_eq!((pushed["_type"].as_str(), pushed["tst"].as_i64()), (Some("location"), Some(1706857000)));
    let quiet = tokio::time::timeout(Duration::from_millis(300), johns.next()).await;
    assert!(quiet.is_err(), "nothing of jane's on a socket filtered to john: {quiet:?}");
}
