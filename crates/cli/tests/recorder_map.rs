//! The map page in a real browser: Debian's Chromium, headless, against a broker fed with
//! OwnTracks messages; the screenshot is kept as a test artifact.

mod common;

use std::path::Path;

use common::owntracks::*;
use common::*;
use serde_json::json;
use tokio::process::Command;

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
