//! Tours, black-box: an app asks for a tour over MQTT (`_type: request` on `.../request`) and in
//! HTTP mode; the answer is the Recorder's `cmd` response with a link; the link opens a
//! read-only view of that device's track between the tour's times, without a login, in headless
//! Chromium; `tours` lists, `untour` withdraws, an old tour's view has expired.

mod common;

use std::process::Stdio;

use common::browser::Page;
use common::owntracks::*;
use common::*;
use serde_json::{json, Value};
use tokio::io::AsyncBufReadExt;

const PUBLIC: &str = "https://owntracks.example";

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

/// `tst` as the apps write times.
fn iso(tst: i64) -> String {
    let out = std::process::Command::new("date")
        .args(["-u", "-d", &format!("@{tst}"), "+%Y-%m-%dT%H:%M:%S.000Z"])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// jane's broker with a password file; her phone's points 4 h, 3.5 h, 3 h and 1 h ago.
async fn broker(dir: &std::path::Path, now: i64) -> Cauldron {
    std::fs::create_dir_all(dir).unwrap();
    let passwords = dir.join("passwd");
    write_passwords(&passwords, "sha512", &[("jane", "s3cret")]);
    let broker = Cauldron::start(
        &dir.join("data"),
        &["--password-file", passwords.to_str().unwrap(), "--recorder-public-url", PUBLIC],
    )
    .await;
    for (ago, lat) in [(14400, 48.85), (12600, 48.86), (10800, 48.87), (3600, 48.88)] {
        let point = json!({"_type": "location", "lat": lat, "lon": 2.29, "tst": now - ago, "batt": 50, "SSID": "home"});
        send(&broker, "owntracks/jane/phone", &point.to_string()).await;
    }
    let auth = basic("jane", "s3cret");
    let path = format!("/api/0/locations?user=jane&device=phone&from={}&to={}", now - 86400, now + 60);
    wait_json(&broker.http, &path, Some(&auth), |v| v["count"] == 4).await;
    broker
}

async fn send(broker: &Cauldron, topic: &str, payload: &str) {
    mosquitto_pub(port(&broker.addr), &["-u", "jane", "-P", "s3cret", "-q", "1", "-t", topic, "-m", payload])
        .await;
}

/// Sends `request` as jane's phone and returns the `cmd` answer it gets.
async fn ask(broker: &Cauldron, request: Value) -> Value {
    let mut sub = tokio::process::Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", port(&broker.addr), "-u", "jane", "-P", "s3cret"])
        .args(["-t", "owntracks/jane/phone/cmd", "-C", "1", "-W", "10", "-q", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(sub.stdout.take().unwrap()).lines();
    // The subscription is in place once the broker has logged it.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    send(broker, "owntracks/jane/phone/request", &request.to_string()).await;
    let line = tokio::time::timeout(WAIT, lines.next_line()).await.unwrap().unwrap().expect("a cmd answer");
    serde_json::from_str(&line).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tour_is_answered_with_a_link_to_a_read_only_view() {
    let dir = data_dir("recorder-tours");
    let now = now();
    let broker = broker(&dir, now).await;
    // The walk of 4 to 3 hours ago.
    let (from, to) = (now - 14400, now - 10800);
    let tour = json!({"label": "Morning walk", "from": iso(from), "to": iso(to)});
    let answer = ask(&broker, json!({"_type": "request", "request": "tour", "tour": tour})).await;
    assert_eq!(
        (
            answer["_type"].clone(),
            answer["action"].clone(),
            answer["request"].clone(),
            answer["status"].clone()
        ),
        (json!("cmd"), json!("response"), json!("tour"), json!(200)),
        "{answer}"
    );
    assert_eq!(answer["tour"]["label"], "Morning walk");
    let uuid = answer["tour"]["uuid"].as_str().unwrap().to_string();
    assert_eq!(answer["tour"]["url"], format!("{PUBLIC}/view/{uuid}"));

    // Without a login: the API says 401, the view answers.
    assert_eq!(http(&broker.http, "GET", "/api/0/last", &[], b"").await.status, 401);
    let page = http(&broker.http, "GET", &format!("/view/{uuid}"), &[], b"").await;
    assert_eq!((page.status, page.header("content-type")), (200, Some("text/html; charset=utf-8")));
    // The tour's hour, with nothing of the account: no battery, no Wi-Fi name.
    let data = http(&broker.http, "GET", &format!("/view/{uuid}/locations"), &[], b"").await.json();
    let times: Vec<_> = data["data"].as_array().unwrap().iter().map(|p| p["tst"].as_i64().unwrap()).collect();
    assert_eq!(times, [from, from + 1800, to]);
    assert!(data["data"][0].get("batt").is_none() && data["data"][0].get("SSID").is_none(), "{data}");
    assert_eq!(http(&broker.http, "GET", "/view/not-a-tour", &[], b"").await.status, 404);

    // In a browser: the track and the label, no devices, no history form.
    let mut view = Page::open(&dir.join("profile"), &format!("http://{}/view/{uuid}", broker.http)).await;
    view.until("document.querySelectorAll('.point').length", json!(3)).await;
    assert_eq!(view.eval("document.querySelector('#panel h1').textContent").await, json!("Morning walk"));
    assert_eq!(
        view.eval("getComputedStyle(document.getElementById('history')).display").await,
        json!("none")
    );
    assert_eq!(view.eval("document.querySelectorAll('.marker').length").await, json!(0));
    view.screenshot("tour-view.png").await;

    // tours lists it; in HTTP mode the answer comes in the POST's reply.
    let listed = ask(&broker, json!({"_type": "request", "request": "tours"})).await;
    assert_eq!((listed["ntours"].clone(), listed["tours"][0]["uuid"].clone()), (json!(1), json!(uuid)));
    let auth = basic("jane", "s3cret");
    let posted = http(
        &broker.http,
        "POST",
        "/pub?u=jane&d=phone",
        &[("Authorization", &auth), ("Content-Type", "application/json")],
        json!({"_type": "request", "request": "tours"}).to_string().as_bytes(),
    )
    .await
    .json();
    assert_eq!(
        (posted[0]["request"].clone(), posted[0]["ntours"].clone()),
        (json!("tours"), json!(1)),
        "{posted}"
    );

    // untour withdraws it.
    send(
        &broker,
        "owntracks/jane/phone/request",
        &json!({"_type": "request", "request": "untour", "uuid": uuid}).to_string(),
    )
    .await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while http(&broker.http, "GET", &format!("/view/{uuid}"), &[], b"").await.status != 404 {
        assert!(tokio::time::Instant::now() < deadline, "the view is still there");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // A tour that ended long ago: its view has expired.
    let old = json!({"label": "2020", "from": "2020-01-01T00:00:00Z", "to": "2020-01-02T00:00:00Z"});
    let answer = ask(&broker, json!({"_type": "request", "request": "tour", "tour": old})).await;
    let uuid = answer["tour"]["uuid"].as_str().unwrap();
    assert_eq!(http(&broker.http, "GET", &format!("/view/{uuid}"), &[], b"").await.status, 410);
    // A tour without times is refused, not stored.
    let bad = ask(&broker, json!({"_type": "request", "request": "tour", "tour": {"label": "x"}})).await;
    assert_eq!(bad["status"], 400, "{bad}");
}
