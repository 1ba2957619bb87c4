//! Helpers of the OwnTracks recorder tests: publishing with mosquitto_pub, polling the API,
//! running the `cauldron` and Python tools, and the `/ws/last` socket.

use std::path::Path;
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::Value;
use tokio::process::Command;

use super::{http, WAIT};

pub const OWNTRACKS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/owntracks");
pub const CRYPTO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/owntracks_crypto.py");
/// The day of the reference's example location.
pub const DAY: &str = "from=2024-02-01&to=2024-02-03";

pub fn port(addr: &str) -> &str {
    addr.rsplit(':').next().unwrap()
}

pub async fn mosquitto_pub(port: &str, args: &[&str]) {
    let status = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", port])
        .args(args)
        .status()
        .await
        .unwrap();
    assert!(status.success(), "mosquitto_pub {args:?}");
}

/// Publishes a JSON payload at QoS 1.
pub async fn publish(port: &str, topic: &str, payload: &str) {
    mosquitto_pub(port, &["-q", "1", "-t", topic, "-m", payload]).await;
}

/// Polls a GET until `done` holds for its JSON (ingest is asynchronous), then returns it.
pub async fn wait_json(
    http_addr: &str,
    path: &str,
    auth: Option<&str>,
    done: impl Fn(&Value) -> bool,
) -> Value {
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

pub async fn cauldron_cli(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_cauldron")).args(args).output().await.unwrap();
    assert!(out.status.success(), "cauldron {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// A `cauldron` command that must fail; returns what it said on stderr.
pub async fn cauldron_cli_fails(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_cauldron")).args(args).output().await.unwrap();
    assert!(!out.status.success(), "cauldron {args:?} succeeded");
    String::from_utf8(out.stderr).unwrap()
}

/// `cauldron locations -u USER -d DEVICE ARGS --data-dir DATA`.
pub async fn locations(data: &str, user: &str, device: &str, args: &[&str]) -> String {
    let mut all = vec!["locations", "-u", user, "-d", device, "--data-dir", data];
    all.extend_from_slice(args);
    cauldron_cli(&all).await
}

pub async fn python(args: &[&str]) -> String {
    let out = Command::new("python3").arg(CRYPTO).args(args).output().await.unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

pub fn example(name: &str) -> String {
    std::fs::read_to_string(Path::new(OWNTRACKS).join(name)).unwrap().trim().to_string()
}

pub type Socket = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

pub async fn websocket(http_addr: &str, auth: &str) -> Socket {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = format!("ws://{http_addr}/ws/last").into_client_request().unwrap();
    request.headers_mut().insert("Authorization", auth.parse().unwrap());
    let stream = tokio::net::TcpStream::connect(http_addr).await.unwrap();
    tokio_tungstenite::client_async(request, stream).await.expect("WebSocket handshake").0
}

pub async fn next_json(socket: &mut Socket) -> Value {
    let message = tokio::time::timeout(WAIT, socket.next()).await.expect("a push").unwrap().unwrap();
    serde_json::from_str(message.to_text().unwrap()).unwrap()
}
