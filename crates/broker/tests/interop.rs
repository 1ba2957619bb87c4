//! Third-party clients against the broker: Mosquitto's command-line tools and paho-mqtt
//! (Python), speaking MQTT 3.1 and 3.1.1. The test command installs both (see README).

mod common;

use std::process::Stdio;
use std::time::Duration;

use cauldron_proto::QoS;
use common::*;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

async fn run(program: &str, args: &[&str]) -> std::process::Output {
    let child = Command::new(program).args(args).stdin(Stdio::null()).kill_on_drop(true).output();
    tokio::time::timeout(Duration::from_secs(30), child)
        .await
        .unwrap_or_else(|_| panic!("{program} timed out"))
        .unwrap_or_else(|e| panic!("{program} could not run ({e}); the README's test command installs it"))
}

/// Runs one scenario of a paho-mqtt script in `tests/python` against the broker.
async fn python(broker: &TestBroker, script: &str, args: &[&str]) {
    let script = format!("{}/tests/python/{script}", env!("CARGO_MANIFEST_DIR"));
    let port = broker.addr.port().to_string();
    let mut argv = vec![script.as_str(), port.as_str()];
    argv.extend_from_slice(args);
    let out = run("python3", &argv).await;
    assert!(
        out.status.success(),
        "{script} {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

macro_rules! paho_tests {
    ($($name:ident: $protocol:literal $scenario:literal,)*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let broker = TestBroker::start().await;
            python(&broker, "paho_interop.py", &[$protocol, $scenario]).await;
        }
    )*};
}

paho_tests! {
    paho_311_qos_round_trips: "311" "qos",
    paho_31_qos_round_trips: "31" "qos",
    paho_311_retained: "311" "retained",
    paho_31_retained: "31" "retained",
    paho_311_will_on_abrupt_close: "311" "will",
    paho_31_will_on_abrupt_close: "31" "will",
    paho_311_persistent_session: "311" "persistent",
    paho_31_persistent_session: "31" "persistent",
    paho_311_takeover: "311" "takeover",
    paho_31_takeover: "31" "takeover",
}

macro_rules! paho_v5_tests {
    ($($name:ident,)*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let broker = TestBroker::start().await;
            python(&broker, "paho_v5.py", &[stringify!($name)]).await;
        }
    )*};
}

// The MQTT 5 conformance run with paho-mqtt: one test per scenario of tests/python/paho_v5.py.
mod paho_v5 {
    use super::*;

    paho_v5_tests! {
        connack_capabilities,
        session_expiry,
        message_expiry,
        topic_alias,
        subscription_options,
        subscription_identifiers,
        shared_subscriptions,
        properties_forwarded,
        reason_codes,
        will_delay,
        mixed_versions,
    }
}

/// Starts `mosquitto_sub` and waits until its subscription is in place.
async fn mosquitto_sub(broker: &TestBroker, args: &[&str]) -> tokio::process::Child {
    let before = broker.broker.subscription_count();
    let port = broker.addr.port().to_string();
    let child = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &port])
        .args(args)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("mosquitto_sub is installed by the README's test command");
    eventually(|| broker.broker.subscription_count() > before).await;
    child
}

async fn read_lines(child: &mut tokio::process::Child, n: usize) -> Vec<String> {
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let mut out = Vec::new();
    while out.len() < n {
        let line =
            tokio::time::timeout(WAIT, lines.next_line()).await.expect("mosquitto_sub output").unwrap();
        out.push(line.expect("mosquitto_sub ended early"));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_pub_and_sub_at_every_qos_and_version() {
    let broker = TestBroker::start().await;
    let port = broker.addr.port().to_string();
    for version in ["mqttv31", "mqttv311", "mqttv5"] {
        let topic = format!("mosq/{version}");
        let mut sub =
            mosquitto_sub(&broker, &["-V", version, "-t", &format!("{topic}/#"), "-q", "2", "-v", "-C", "3"])
                .await;
        for qos in ["0", "1", "2"] {
            let out = run(
                "mosquitto_pub",
                &[
                    "-p",
                    &port,
                    "-V",
                    version,
                    "-t",
                    &format!("{topic}/{qos}"),
                    "-m",
                    &format!("q{qos}"),
                    "-q",
                    qos,
                ],
            )
            .await;
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        }
        let lines = read_lines(&mut sub, 3).await;
        assert_eq!(lines, [format!("{topic}/0 q0"), format!("{topic}/1 q1"), format!("{topic}/2 q2")]);
        tokio::time::timeout(WAIT, sub.wait()).await.unwrap().unwrap();
        eventually(|| broker.broker.subscription_count() == 0).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_sub_gets_retained_and_our_client_gets_mosquitto_pub() {
    let broker = TestBroker::start().await;
    let port = broker.addr.port().to_string();
    let out =
        run("mosquitto_pub", &["-p", &port, "-t", "mosq/retained", "-m", "kept", "-r", "-q", "1"]).await;
    assert!(out.status.success());
    let out =
        run("mosquitto_sub", &["-p", &port, "-t", "mosq/retained", "-C", "1", "-F", "%r %t %p", "-W", "5"])
            .await;
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "1 mosq/retained kept");

    let (client, mut messages) = broker.client("ours").await;
    client.subscribe("from/mosquitto", QoS::ExactlyOnce).await.unwrap();
    let out = run(
        "mosquitto_pub",
        &["-p", &port, "-t", "from/mosquitto", "-m", "hello", "-q", "2", "-V", "mqttv31"],
    )
    .await;
    assert!(out.status.success());
    let message = next(&mut messages).await;
    assert_eq!((&message.payload[..], message.qos), (&b"hello"[..], QoS::ExactlyOnce));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_sub_persistent_session_collects_messages_while_away() {
    let broker = TestBroker::start().await;
    let port = broker.addr.port().to_string();
    // -c: clean session off; -E: subscribe and exit.
    let out =
        run("mosquitto_sub", &["-p", &port, "-i", "mosq-persist", "-c", "-q", "1", "-t", "persist/#", "-E"])
            .await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for i in 0..3 {
        run("mosquitto_pub", &["-p", &port, "-t", &format!("persist/{i}"), "-m", &i.to_string(), "-q", "1"])
            .await;
    }
    let out = run(
        "mosquitto_sub",
        &["-p", &port, "-i", "mosq-persist", "-c", "-q", "1", "-t", "persist/#", "-C", "3", "-v", "-W", "5"],
    )
    .await;
    assert_eq!(String::from_utf8_lossy(&out.stdout), "persist/0 0\npersist/1 1\npersist/2 2\n");
}
