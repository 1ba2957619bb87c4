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
        .arg("--window-size=1200,800")
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
async fn devtools_new_tab(host: &str, url: &str) -> serde_json::Value {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(host).await.unwrap();
    let request = format!("PUT /json/new?{url} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(WAIT, stream.read(&mut chunk)).await.unwrap().unwrap();
        assert!(n > 0, "DevTools closed the connection: {}", String::from_utf8_lossy(&raw));
        raw.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&raw);
        let Some((head, body)) = text.split_once("\r\n\r\n") else { continue };
        let length = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse::<usize>())
            })
            .expect("a Content-Length")
            .unwrap();
        if body.len() >= length {
            return serde_json::from_str(&body[..length]).unwrap();
        }
    }
}

/// A page opened through the DevTools protocol, to ask it questions while it runs.
struct Page {
    socket: tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>,
    next_id: u64,
    _browser: tokio::process::Child,
}

impl Page {
    /// Starts Chromium with a DevTools port and opens `url` in a new tab.
    async fn open(profile: &Path, url: &str) -> Page {
        use tokio::io::AsyncBufReadExt;
        let mut browser = chromium(profile)
            .args(["--remote-debugging-port=0", "about:blank"])
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("chromium is installed by the test command");
        let mut lines = tokio::io::BufReader::new(browser.stderr.take().unwrap()).lines();
        let devtools = tokio::time::timeout(WAIT, async {
            while let Some(line) = lines.next_line().await.unwrap() {
                if let Some(url) = line.strip_prefix("DevTools listening on ") {
                    return url.to_string();
                }
            }
            panic!("chromium exited without a DevTools port");
        })
        .await
        .expect("DevTools in time");
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let host = devtools.trim_start_matches("ws://").split('/').next().unwrap().to_string();
        let target = devtools_new_tab(&host, url).await;
        let page_url = target["webSocketDebuggerUrl"].as_str().expect("a page target").to_string();
        let stream = tokio::net::TcpStream::connect(&host).await.unwrap();
        let (socket, _) = tokio_tungstenite::client_async(page_url, stream).await.unwrap();
        Page { socket, next_id: 1, _browser: browser }
    }

    /// Evaluates a JavaScript expression in the page and returns its value.
    async fn eval(&mut self, expression: &str) -> serde_json::Value {
        use futures_util::{SinkExt, StreamExt};
        let id = self.next_id;
        self.next_id += 1;
        let call = json!({"id": id, "method": "Runtime.evaluate", "params": {"expression": expression, "returnByValue": true}});
        self.socket.send(tokio_tungstenite::tungstenite::Message::text(call.to_string())).await.unwrap();
        loop {
            let message = tokio::time::timeout(WAIT, self.socket.next()).await.unwrap().unwrap().unwrap();
            let reply: serde_json::Value =
                serde_json::from_str(message.to_text().unwrap_or("{}")).unwrap_or_default();
            if reply["id"] == id {
                return reply["result"]["result"]["value"].clone();
            }
        }
    }

    /// Waits until `expression` evaluates to `expected`.
    async fn until(&mut self, expression: &str, expected: serde_json::Value) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let value = self.eval(expression).await;
            if value == expected {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "{expression}: {value}, not {expected}");
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
}

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
