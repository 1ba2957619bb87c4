//! `cauldron recorder` on its own, as a client of Mosquitto 2.0: a persistent session, and TLS.

mod common;

use std::path::Path;
use std::time::Duration;

use common::owntracks::*;
use common::*;
use serde_json::json;
use tokio::process::Command;

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
    mosquitto_pub(&p, &["-q", "2", "-t", "owntracks/mo/phone", "-m", &example("location.json")]).await;
    let path = format!("/api/0/locations?user=mo&device=phone&{DAY}");
    wait_json(&http_addr, &path, None, |v| v["count"] == 1).await;
    // Stopped (SIGINT), a QoS 1 location arrives; on restart the session hands it over.
    let pid = recorder.id().unwrap().to_string();
    Command::new("kill").args(["-INT", &pid]).status().await.unwrap();
    tokio::time::timeout(WAIT, recorder.wait()).await.expect("recorder exits on SIGINT").unwrap();
    publish(&p, "owntracks/mo/phone", r#"{"_type":"location","lat":48.9,"lon":2.3,"tst":1706859999}"#).await;
    let _recorder =
        standalone(&dir.join("store"), &format!("mqtt://127.0.0.1:{}", mosquitto.port), http_port, &[]).await;
    let history = wait_json(&http_addr, &path, None, |v| v["count"] == 2).await;
    assert_eq!(history["data"][1]["tst"], 1706859999);
    assert_eq!(wait_json(&http_addr, "/api/0/list", None, |_| true).await, json!({"results": ["mo"]}));
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
