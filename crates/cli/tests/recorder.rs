//! The OwnTracks recorder, black-box: messages from real clients (mosquitto_pub, paho-mqtt)
//! into `cauldron serve`, read back through the Recorder API, `/ws/last` and `cauldron
//! locations`; encryption against PyNaCl; the calls owntracks/frontend makes.

mod common;

use std::time::Duration;

use common::owntracks::*;
use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_message_type_from_mosquitto_pub_is_recorded() {
    let dir = data_dir("recorder-types");
    let broker = Cauldron::start(&dir, &[]).await;
    let p = port(&broker.addr);
    let base = "owntracks/jane/nokia";
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
    // The zone of the position and the local time there, found offline, stored with the point.
    assert_eq!(all["data"][0]["tzname"], "Europe/Paris");
    assert_eq!(all["data"][0]["isolocal"], "2024-02-02T07:40:00+0100");
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
    // Header values as sent: a range with a time, and a field name with capitals.
    let headed = http(
        &broker.http,
        "GET",
        "/api/0/locations",
        &[
            ("X-Limit-User", "jane"),
            ("X-Limit-Device", "phone"),
            ("X-Limit-From", "2024-02-02T06:40:00"),
            ("X-Limit-To", "2024-02-02T06:42"),
            ("X-Limit-Fields", "tst,SSID"),
        ],
        b"",
    )
    .await;
    assert_eq!(headed.status, 200, "{}", headed.body);
    assert_eq!(headed.json()["data"], json!([{"tst": 1706856060}]));
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
    // XML as the Recorder writes it: its stylesheet line, an element per field, `fields` obeyed.
    let xml = http(&broker.http, "GET", &format!("{path}&format=xml"), &[], b"").await;
    assert!(xml.body.contains("<?xml-stylesheet type=\"text/xsl\" href=\"owntracks.xsl\"?>"), "{}", xml.body);
    assert!(xml.body.contains("<owntracks>") && xml.body.contains("  <poi>Cafe</poi>"), "{}", xml.body);
    let picked = http(&broker.http, "GET", &format!("{path}&format=xml&fields=tst,poi"), &[], b"").await;
    assert!(
        picked.body.contains(" <point>\n  <tst>1706856000</tst>\n  <poi/>\n </point>"),
        "{}",
        picked.body
    );
    assert!(!picked.body.contains("<lat>"), "{}", picked.body);
    // CSV without fields: the keys of the first record.
    let csv = http(&broker.http, "GET", &format!("{path}&format=csv"), &[], b"").await.body;
    let header = csv.lines().next().unwrap_or_default();
    assert!(header.contains("lat") && header.contains("tid"), "{csv}");
    assert!(!header.contains("_type"), "{csv}");
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
    // The address of a position, offline: the nearest place, its region and country.
    assert_eq!(
        http(&broker.http, "GET", "/api/0/q?lat=48.8566&lon=2.3522", &[], b"").await.json(),
        json!({"ghash": "u09tvw0", "addr": "Paris, Ile-de-France, FR", "locality": "Paris", "cc": "FR", "tzname": "Europe/Paris"})
    );
    assert_eq!(http(&broker.http, "GET", "/api/0/q?lat=abc", &[], b"").await.json(), json!({}));
    // Stored with the point: the history has them too (the nearest town centre: 48.85, 2.29 is
    // nearer Vanves' than the one point that stands for all of Paris).
    assert_eq!(all["data"][0]["locality"], "Vanves", "{all}");
    assert_eq!(all["data"][0]["cc"], "FR");
    assert!(all["data"][0]["ghash"].as_str().is_some_and(|g| g.len() == 7 && g.starts_with("u09")));
    let monitor = http(&broker.http, "GET", "/api/0/monitor", &[], b"").await;
    assert!(monitor.body.trim_end().ends_with(" owntracks/jane/phone"), "{}", monitor.body);
    let photo = http(&broker.http, "GET", "/api/0/photo?user=jane", &[], b"").await;
    assert_eq!((photo.status, photo.header("content-type")), (200, Some("image/png")));
    // Without a user, as the Recorder: 416.
    assert_eq!(http(&broker.http, "GET", "/api/0/photo", &[], b"").await.status, 416);
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
    cauldron_cli(&["recorder", "keys", "set", "eve", "phone", "s3cr1t-of-eve", "--data-dir", &data]).await;
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
    // ocat's --list and --last.
    let users: Value =
        serde_json::from_str(&cauldron_cli(&["locations", "--list", "--data-dir", &data]).await).unwrap();
    assert!(users["results"].as_array().unwrap().contains(&json!("eve")), "{users}");
    let devices: Value =
        serde_json::from_str(&cauldron_cli(&["locations", "--list", "-u", "eve", "--data-dir", &data]).await)
            .unwrap();
    assert!(devices["results"].as_array().unwrap().contains(&json!("tablet")), "{devices}");
    let lasts: Value =
        serde_json::from_str(&cauldron_cli(&["locations", "--last", "-u", "eve", "--data-dir", &data]).await)
            .unwrap();
    assert_eq!(
        (lasts[0]["username"].clone(), lasts[0]["lat"].clone()),
        (json!("eve"), json!(48.856826)),
        "{lasts}"
    );
    // `| head -1`: a reader that goes away ends the output quietly, not with a panic.
    let mut piped = std::process::Command::new(env!("CARGO_BIN_EXE_cauldron"))
        .args([
            "locations",
            "-u",
            "eve",
            "-d",
            "tablet",
            "--data-dir",
            &data,
            "-F",
            "2000-01-01",
            "-f",
            "raw",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(piped.stdout.take());
    let closed = piped.wait_with_output().unwrap();
    assert!(closed.status.success(), "{}", String::from_utf8_lossy(&closed.stderr));
    assert!(!String::from_utf8_lossy(&closed.stderr).contains("panicked"));
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
        assert_eq!(
            response.header("x-content-length"),
            Some(response.body.len().to_string().as_str()),
            "{path}"
        );
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_purges_old_history_at_start_and_keeps_last_positions() {
    let dir = data_dir("recorder-retention");
    let broker = Cauldron::start(&dir, &[]).await;
    publish(port(&broker.addr), "owntracks/old/phone", &example("location.json")).await;
    let path = format!("/api/0/locations?user=old&device=phone&{DAY}");
    wait_json(&broker.http, &path, None, |v| v["count"] == 1).await;
    broker.terminate().await;
    // Restarted with a 30-day retention: the 2024 point goes at once, the last position stays.
    let broker = Cauldron::start(&dir, &["--recorder-retention-days", "30"]).await;
    wait_json(&broker.http, &path, None, |v| v["count"] == 0).await;
    let last = wait_json(&broker.http, "/api/0/last", None, |_| true).await;
    assert_eq!(last[0]["tst"], 1706856298);
    broker.terminate().await;
}

/// PUBACK for an OwnTracks location waits for the recorder's commit: after kill -9, every
/// acknowledged location is in the history.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_location_survives_kill_9() {
    use cauldron_client::{Client, Options, QoS};
    let dir = data_dir("recorder-kill9");
    let broker = Cauldron::start(&dir, &[]).await;
    let (client, _) = Client::connect(Options::new(broker.addr.as_str(), "phone")).await.unwrap();
    let mut acked = 0;
    for i in 0..300 {
        let point =
            json!({"_type": "location", "lat": 50.0, "lon": 8.0 + i as f64 * 1e-4, "tst": 1706850000 + i});
        client.publish("owntracks/kim/phone", point.to_string(), QoS::AtLeastOnce, false).await.unwrap();
        acked += 1;
    }
    broker.kill9().await;
    let broker = Cauldron::start(&dir, &[]).await;
    let history =
        http(&broker.http, "GET", &format!("/api/0/locations?user=kim&device=phone&{DAY}"), &[], b"").await;
    assert_eq!(history.json()["count"], acked);
    broker.terminate().await;
}

/// OsmAnd's (and Traccar's) GET protocol at `/`, as the Recorder takes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn osmand_reports_become_locations() {
    let dir = data_dir("recorder-osmand");
    let broker = Cauldron::start(&dir, &[]).await;
    let query =
        "/?id=jane/car&lat=48.137&lon=11.575&timestamp=1706856000&speed=10&altitude=520.4&bearing=90&batt=77";
    let answer = http(&broker.http, "GET", query, &[], b"").await;
    assert_eq!((answer.status, answer.body.as_str()), (200, "tak"));
    let path = format!("/api/0/locations?user=jane&device=car&{DAY}");
    let point = wait_json(&broker.http, &path, None, |v| v["count"] == 1).await["data"][0].clone();
    for (key, value) in [
        ("_proto", json!("osmand")),
        ("lat", json!(48.137)),
        ("lon", json!(11.575)),
        ("tst", json!(1706856000)),
        ("vel", json!(19)),
        ("alt", json!(520)),
        ("cog", json!(90)),
        ("batt", json!(77)),
        ("tid", json!("ar")),
    ] {
        assert_eq!(point[key], value, "{key}");
    }
    // Milliseconds (Traccar's clients) are understood too; a bad id is refused.
    let ms = "/?id=jane/car&lat=48.2&lon=11.6&timestamp=1706856060000";
    assert_eq!(http(&broker.http, "GET", ms, &[], b"").await.status, 200);
    wait_json(&broker.http, &path, None, |v| v["count"] == 2 && v["data"][1]["tst"] == 1706856060).await;
    assert_eq!(http(&broker.http, "GET", "/?id=nodevice&lat=1&lon=2", &[], b"").await.status, 400);
    assert_eq!(http(&broker.http, "GET", "/?id=jane/car&lat=NaN&lon=2", &[], b"").await.status, 400);
    // Without a report in the query, `/` is still the map.
    assert!(http(&broker.http, "GET", "/", &[], b"").await.body.contains("<title>cauldron"));
}
