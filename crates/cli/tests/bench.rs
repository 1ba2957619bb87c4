//! `cauldron bench pubsub` against the real broker: every message counted, numbers reported.

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pubsub_reports_every_message_at_each_qos() {
    let dir = data_dir("bench");
    let broker = Cauldron::start(&dir, &[]).await;
    for qos in ["0", "1", "2"] {
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_cauldron"))
            .args(["bench", "pubsub", "-H", &broker.addr, "-c", "3", "-n", "100", "-q", qos, "--json"])
            .output()
            .await
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "qos {qos}: {stdout} {}", String::from_utf8_lossy(&out.stderr));
        assert!(stdout.contains("\"sent\":300,\"received\":300,\"errors\":0"), "{stdout}");
        assert!(stdout.contains("\"p99\":"), "{stdout}");
    }
    broker.terminate().await;
}

async fn bench(args: &[&str]) -> (bool, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_cauldron"))
        .arg("bench")
        .args(args)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    (out.status.success(), format!("{stdout}{}", String::from_utf8_lossy(&out.stderr)))
}

async fn metrics(http: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(http).await.unwrap();
    stream.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response
}

/// The number after `"name":` in a JSON summary.
fn field(json: &str, name: &str) -> f64 {
    let start =
        json.find(&format!("\"{name}\":")).unwrap_or_else(|| panic!("{name} in {json}")) + name.len() + 3;
    json[start..].split([',', '}']).next().unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conn_opens_connections_at_a_rate() {
    let dir = data_dir("bench-conn");
    let broker = Cauldron::start(&dir, &[]).await;
    let (ok, out) = bench(&["conn", "-H", &broker.addr, "-c", "50", "-r", "100", "--json"]).await;
    assert!(ok, "{out}");
    assert_eq!(field(&out, "connected"), 50.0);
    assert_eq!(field(&out, "errors"), 0.0);
    // 50 connections at 100 per second take about half a second.
    assert!(field(&out, "seconds") >= 0.45, "{out}");
    assert!(field(&out, "p99") > 0.0, "{out}");
    // Against a port nobody listens on, every connection is an error and the run fails.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
    let (ok, out) = bench(&["conn", "-H", &closed, "-c", "3", "--json"]).await;
    assert!(!ok && field(&out, "errors") == 3.0, "{out}");
    broker.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pub_and_sub_in_separate_processes_measure_end_to_end_latency() {
    let dir = data_dir("bench-pub-sub");
    let broker = Cauldron::start(&dir, &[]).await;
    // Two subscribers, each on its own publisher's topic via %i, expecting 200 messages each.
    let sub = tokio::process::Command::new(env!("CARGO_BIN_EXE_cauldron"))
        .args([
            "bench",
            "sub",
            "-H",
            &broker.addr,
            "-c",
            "2",
            "-t",
            "load/%i",
            "-q",
            "1",
            "-n",
            "200",
            "--json",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Publishing before the subscriptions exist would lose messages: wait until they do.
    for _ in 0..100 {
        if metrics(&broker.http).await.contains("\ncauldron_subscriptions 2\n") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let (ok, out) = bench(&[
        "pub",
        "-H",
        &broker.addr,
        "-c",
        "2",
        "-t",
        "load/%i",
        "-n",
        "200",
        "-r",
        "1000",
        "-q",
        "1",
        "--json",
    ])
    .await;
    assert!(ok, "{out}");
    assert_eq!(field(&out, "sent"), 400.0, "{out}");
    let out = tokio::time::timeout(WAIT, sub.wait_with_output()).await.unwrap().unwrap();
    let json = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{json}");
    assert_eq!(field(&json, "received"), 400.0, "{json}");
    let p50 = field(&json, "p50");
    assert!(p50 > 0.0 && p50 < 1000.0, "latency from the payload's send time: {json}");
    broker.terminate().await;
}
