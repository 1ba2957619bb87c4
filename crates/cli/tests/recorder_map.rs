//! The map page in a real browser: Debian's Chromium, headless, against a broker fed with
//! OwnTracks messages; the screenshot is kept as a test artifact.

mod common;

use std::path::Path;

use common::browser::*;
use common::owntracks::*;
use common::*;
use serde_json::json;
use tokio::process::Command;

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
        .arg("--virtual-time-budget=5000")
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
        .arg("--virtual-time-budget=5000")
        .arg(format!("--screenshot={}", shot.display()))
        .arg(&url)
        .output()
        .await
        .unwrap();
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
    let png = std::fs::read(&shot).expect("a screenshot");
    assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000, "a real screenshot, {} bytes", png.len());
}

/// `PUT /json/new?URL` on Chromium's DevTools HTTP endpoint, which speaks HTTP/1.1 only and keeps
/// the connection open: the body is read by its Content-Length.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_map_follows_new_positions_live() {
    let dir = data_dir("recorder-map-live");
    let broker = Cauldron::start(&dir, &["--tile-url", ""]).await;
    let p = port(&broker.addr);
    publish(
        p,
        "owntracks/jane/phone",
        r#"{"_type":"location","lat":48.85,"lon":2.29,"tst":1706856000,"tid":"jp"}"#,
    )
    .await;
    wait_json(&broker.http, "/api/0/last", None, |v| v.as_array().is_some_and(|a| a.len() == 1)).await;
    let mut page = Page::open(&dir.join("profile"), &format!("http://{}/", broker.http)).await;
    page.until("document.querySelectorAll('#devices li').length", json!(1)).await;
    // A new device and a move arrive over /ws/last; the page shows both without a reload.
    publish(
        p,
        "owntracks/john/tablet",
        r#"{"_type":"location","lat":52.52,"lon":13.40,"tst":1706856100,"tid":"jt"}"#,
    )
    .await;
    page.until("document.querySelectorAll('.marker').length", json!(2)).await;
    let before = page
        .eval("document.querySelector('circle.marker[data-device=\"jane/phone\"]').getAttribute('cx')")
        .await;
    publish(
        p,
        "owntracks/jane/phone",
        r#"{"_type":"location","lat":48.95,"lon":2.59,"tst":1706856200,"tid":"jp"}"#,
    )
    .await;
    let moved = format!(
        "document.querySelector('circle.marker[data-device=\"jane/phone\"]').getAttribute('cx') !== {before}"
    );
    page.until(&moved, json!(true)).await;
    page.until("document.querySelector('#devices').textContent.includes('john/tablet')", json!(true)).await;
}

/// What the served test pages do, as owntracks/frontend does: list the users, then open
/// `/ws/last`, send `LAST` and show what comes. `API` is the API's origin.
const CLIENT_PAGE: &str = r#"<!doctype html><html><body><pre id="out"></pre><script>
const API = "__API__";
const out = document.getElementById("out");
const show = (line) => { out.textContent += line + "\n"; };
fetch(API + "/api/0/list", { credentials: "include" })
  .then((r) => r.json()).then((j) => show("list " + j.results.join(",")))
  .catch((e) => show("list failed"));
const ws = new WebSocket(API.replace("http", "ws") + "/ws/last");
ws.onopen = () => { ws.send("LAST"); show("ws open"); };
ws.onmessage = (m) => show("ws " + JSON.parse(m.data).topic);
ws.onerror = () => show("ws failed");
</script></body></html>"#;

/// True once the page has listed jane and received her phone over an open `/ws/last`.
const SHOWS_ALL: &str = "['list jane', 'ws open', 'ws owntracks/jane/phone'].every((l) => \
                         (document.getElementById('out')?.textContent ?? '').split('\\n').includes(l))";

fn client_page(dir: &Path, api: &str) -> std::path::PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("index.html"), CLIENT_PAGE.replace("__API__", api)).unwrap();
    dir.to_path_buf()
}

/// A broker with users, jane's phone recorded, and the recorder options `extra`.
async fn broker_with_users(dir: &Path, extra: &[&str]) -> Cauldron {
    std::fs::create_dir_all(dir).unwrap();
    let passwords = dir.join("passwd");
    write_passwords(&passwords, "sha512", &[("jane", "s3cret")]);
    let mut args = vec!["--password-file", passwords.to_str().unwrap()];
    args.extend_from_slice(extra);
    let broker = Cauldron::start(&dir.join("data"), &args).await;
    let p = port(&broker.addr);
    mosquitto_pub(
        p,
        &[
            "-u",
            "jane",
            "-P",
            "s3cret",
            "-t",
            "owntracks/jane/phone",
            "-m",
            r#"{"_type":"location","lat":48.85,"lon":2.29,"tst":1706856000,"tid":"jp"}"#,
        ],
    )
    .await;
    let auth = basic("jane", "s3cret");
    wait_json(&broker.http, "/api/0/last", Some(auth.as_str()), |v| {
        v.as_array().is_some_and(|a| a.len() == 1)
    })
    .await;
    broker
}

/// Issue 17, item 1: the frontend served by cauldron itself (`--recorder-docroot`), on the same
/// origin: the browser's login for the page is sent with its API calls and `/ws/last`; without
/// a login the files are not served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_served_frontend_uses_the_browsers_login_for_the_api_and_the_feed() {
    let dir = data_dir("recorder-docroot");
    let root = dir.join("root");
    std::fs::create_dir_all(&root).unwrap();
    let broker = broker_with_users(&dir, &["--recorder-docroot", root.to_str().unwrap()]).await;
    client_page(&root, &format!("http://{}", broker.http));
    assert_eq!(http(&broker.http, "GET", "/index.html", &[], b"").await.status, 401);
    assert_eq!(
        http(&broker.http, "GET", "/map", &[("Authorization", &basic("jane", "s3cret"))], b"").await.status,
        200
    );
    // The login the browser caches from a first navigation, as after its login dialog.
    let mut page =
        Page::open(&dir.join("profile"), &format!("http://jane:s3cret@{}/index.html", broker.http)).await;
    page.until(SHOWS_ALL, json!(true)).await;
}

/// Issue 17, item 1: a frontend on another origin that the operator allows
/// (`--recorder-cors-origin`): preflights answered, credentials allowed, `/ws/last` open to it;
/// a page from any other origin reads nothing and gets no feed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allowed_origin_reads_with_the_users_login_and_others_do_not() {
    let dir = data_dir("recorder-cors");
    let front_port = free_port();
    let allowed = format!("http://127.0.0.1:{front_port}");
    let broker = broker_with_users(&dir, &["--recorder-cors-origin", &allowed]).await;
    let api = format!("http://{}", broker.http);
    let front = client_page(&dir.join("front"), &api);
    let _server = Command::new("python3")
        .args(["-m", "http.server", &front_port.to_string(), "--bind", "127.0.0.1", "--directory"])
        .arg(&front)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    while tokio::net::TcpStream::connect(("127.0.0.1", front_port)).await.is_err() {
        assert!(tokio::time::Instant::now() < deadline, "the frontend's file server did not start");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let preflight = http(
        &broker.http,
        "OPTIONS",
        "/api/0/locations",
        &[
            ("Origin", &allowed),
            ("Access-Control-Request-Method", "GET"),
            ("Access-Control-Request-Headers", "authorization"),
        ],
        b"",
    )
    .await;
    assert_eq!(preflight.status, 204);
    assert_eq!(preflight.header("access-control-allow-origin"), Some(allowed.as_str()));
    assert_eq!(preflight.header("access-control-allow-credentials"), Some("true"));
    let other = [("Origin", "http://evil.example"), ("Access-Control-Request-Method", "GET")];
    assert_eq!(http(&broker.http, "OPTIONS", "/api/0/list", &other, b"").await.status, 403);

    // The user logged in to the API's origin once (cached, as after its login dialog), then
    // opens the frontend.
    let mut page =
        Page::open(&dir.join("profile"), &format!("http://jane:s3cret@{}/api/0/version", broker.http)).await;
    // Logged in once the answer is there (navigating away before would cancel the login).
    page.until("(document.body?.innerText ?? '').includes('\"version\"')", json!(true)).await;
    page.navigate(&format!("{allowed}/index.html")).await;
    page.until(SHOWS_ALL, json!(true)).await;
    // The same page from an origin nobody allowed (another host name for the same server).
    page.navigate(&format!("http://localhost:{front_port}/index.html")).await;
    page.until(
        "['list failed', 'ws failed'].every((l) => (document.getElementById('out')?.textContent ?? '').includes(l))",
        json!(true),
    )
    .await;
}

/// Issue 17, item 4 (in part), on a 390 px phone screen: the map and the panel both visible, a
/// colour per device, a popup with what the point reported, and the open track growing live.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_phone_the_map_shows_colours_popups_and_a_growing_track() {
    let dir = data_dir("recorder-map-phone");
    let broker = Cauldron::start(&dir, &["--tile-url", ""]).await;
    let p = port(&broker.addr);
    for i in 0..3 {
        let point = json!({"_type": "location", "lat": 48.85 + i as f64 * 0.01, "lon": 2.29, "tst": 1706856000 + i * 600,
            "acc": 12, "batt": 80, "vel": 4, "tid": "jp"});
        publish(p, "owntracks/jane/phone", &point.to_string()).await;
    }
    // john a few metres from where jane was last: their labels would meet.
    publish(
        p,
        "owntracks/john/tablet",
        r#"{"_type":"location","lat":48.8701,"lon":2.2901,"tst":1706856000,"tid":"jt"}"#,
    )
    .await;
    wait_json(&broker.http, "/api/0/last", None, |v| v.as_array().is_some_and(|a| a.len() == 2)).await;
    let url = format!("http://{}/?user=jane&device=phone&from=2024-02-01&to=2024-02-03", broker.http);
    // A phone's screen: 390 by 844 CSS pixels (headless windows are at least 500 wide).
    let mut page = Page::open(&dir.join("profile"), "about:blank").await;
    let phone = json!({"width": 390, "height": 844, "deviceScaleFactor": 2, "mobile": true});
    page.call("Emulation.setDeviceMetricsOverride", phone).await;
    page.navigate(&url).await;
    page.until("document.querySelectorAll('.point').length", json!(3)).await;
    page.until("document.querySelectorAll('.marker').length", json!(2)).await;
    // Map on top, at least half the screen; the panel below it.
    let layout = page
        .eval(
            "(() => { const m = document.getElementById('map').getBoundingClientRect(), \
               p = document.getElementById('panel').getBoundingClientRect(); \
               return [m.width, m.height >= 844 * 0.5, p.top >= m.bottom - 1]; })()",
        )
        .await;
    assert_eq!(layout, json!([390, true, true]), "map width, map height, panel below");
    // Two devices close together: their names one under the other, not on top of each other.
    let lines = page
        .eval("[...document.querySelectorAll('text.label')].map((t) => Number(t.getAttribute('y')))")
        .await;
    let lines: Vec<f64> = lines.as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    assert!(lines.len() == 2 && (lines[0] - lines[1]).abs() >= 14.0, "labels at {lines:?}");
    let fills = page.eval("[...document.querySelectorAll('.marker')].map((m) => m.style.fill)").await;
    let fills = fills.as_array().unwrap();
    assert!(fills.len() == 2 && fills[0] != fills[1], "a colour per device: {fills:?}");
    // A tap on jane's marker: a popup with her battery, speed and accuracy.
    page.eval("document.querySelector('circle.marker[data-device=\"jane/phone\"]').dispatchEvent(new MouseEvent('click', {bubbles: true}))")
        .await;
    let popup = page
        .eval("document.getElementById('popup').hidden ? null : document.getElementById('popup').innerText")
        .await;
    let text = popup.as_str().unwrap_or_default();
    assert!(text.contains("80%") && text.contains("4 km/h") && text.contains("12 m"), "{popup}");
    // A new position of the open device extends its track without a reload.
    let point = json!({"_type": "location", "lat": 48.89, "lon": 2.30, "tst": 1706858000, "tid": "jp"});
    publish(p, "owntracks/jane/phone", &point.to_string()).await;
    page.until("document.querySelectorAll('.point').length", json!(4)).await;

    // The phone-sized screenshot, kept as an artifact of the test run.
    page.screenshot("map-phone.png").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_day_shows_regions_events_and_a_timeline_on_desktop_and_phone() {
    let dir = data_dir("recorder-map-day");
    let broker = Cauldron::start(&dir, &["--tile-url", ""]).await;
    let p = port(&broker.addr);
    let t0 = 1706853600; // 2024-02-02T06:00:00Z
    let regions = json!({"_type": "waypoints", "waypoints": [
        {"_type": "waypoint", "desc": "Home", "lat": 48.85, "lon": 2.29, "rad": 100, "tst": 1},
        {"_type": "waypoint", "desc": "Work", "lat": 48.88, "lon": 2.29, "rad": 100, "tst": 2},
        {"_type": "waypoint", "desc": "Bakery", "lat": 48.86, "lon": 2.295, "tst": 3}]});
    publish(p, "owntracks/jane/phone/waypoints", &regions.to_string()).await;
    // An hour at home, a trip of about 3.3 km, two hours at work.
    let day = [
        (0, 48.8500),
        (1800, 48.8501),
        (3600, 48.8500),
        (3900, 48.8600),
        (4200, 48.8700),
        (4500, 48.8800),
        (6000, 48.8801),
        (11700, 48.8800),
    ];
    for (offset, lat) in day {
        let point = json!({"_type": "location", "lat": lat, "lon": 2.29, "tst": t0 + offset, "tid": "jp"});
        publish(p, "owntracks/jane/phone", &point.to_string()).await;
    }
    for (offset, event, desc, lat) in [(3650, "leave", "Home", 48.8505), (4500, "enter", "Work", 48.8800)] {
        let transition = json!({"_type": "transition", "event": event, "desc": desc, "lat": lat, "lon": 2.29,
            "tst": t0 + offset, "wtst": 1, "acc": 10, "t": "c", "tid": "jp"});
        publish(p, "owntracks/jane/phone/event", &transition.to_string()).await;
    }
    let range = "from=2024-02-02&to=2024-02-03";
    wait_json(&broker.http, &format!("/api/0/locations?user=jane&device=phone&{range}"), None, |v| {
        v["count"] == 8
    })
    .await;
    let timeline =
        wait_json(&broker.http, &format!("/api/0/timeline?user=jane&device=phone&{range}"), None, |_| true)
            .await;
    let kinds: Vec<_> = timeline["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["type"].clone(), s["place"].clone()))
        .collect();
    assert_eq!(
        kinds,
        [(json!("stay"), json!("Home")), (json!("trip"), json!(null)), (json!("stay"), json!("Work"))]
    );

    let url = format!("http://{}/?user=jane&device=phone&from=2024-02-02&to=2024-02-02T23:59", broker.http);
    for (name, metrics) in [
        (
            "map-day-desktop.png",
            json!({"width": 1280, "height": 800, "deviceScaleFactor": 1, "mobile": false}),
        ),
        ("map-day-phone.png", json!({"width": 390, "height": 844, "deviceScaleFactor": 2, "mobile": true})),
    ] {
        let mut page = Page::open(&dir.join(format!("profile-{name}")), "about:blank").await;
        page.call("Emulation.setDeviceMetricsOverride", metrics).await;
        page.navigate(&url).await;
        page.until("document.querySelectorAll('#timeline li').length", json!(3)).await;
        let entries =
            page.eval("[...document.querySelectorAll('#timeline li')].map((li) => li.textContent)").await;
        let entries: Vec<&str> = entries.as_array().unwrap().iter().map(|e| e.as_str().unwrap()).collect();
        assert!(entries[0].contains("Home") && entries[0].contains("1 h 00 min"), "{entries:?}");
        assert!(entries[1].contains("3.3 km") && entries[1].contains("15 min"), "{entries:?}");
        assert!(entries[2].contains("Work") && entries[2].contains("2 h 00 min"), "{entries:?}");
        // Two regions drawn to scale and a pin; the leave and the enter as squares.
        assert_eq!(page.eval("document.querySelectorAll('circle.region').length").await, json!(2));
        assert_eq!(page.eval("document.querySelectorAll('path.pin').length").await, json!(1));
        let events = page
            .eval("[...document.querySelectorAll('rect.event')].map((r) => r.getAttribute('class'))")
            .await;
        assert_eq!(events, json!(["event leave", "event enter"]));
        let labels =
            page.eval("[...document.querySelectorAll('text.region-label')].map((t) => t.textContent)").await;
        assert_eq!(labels, json!(["Home", "Work", "Bakery"]));
        // A tap on the trip shows that part of the track.
        page.eval("document.querySelectorAll('#timeline li')[1].click()").await;
        page.screenshot(name).await;
    }
}
