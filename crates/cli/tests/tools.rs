//! `cauldron pub` and `cauldron sub` side by side with `mosquitto_pub` and `mosquitto_sub`:
//! the same flags must give the same output.

mod common;

use std::process::{Output, Stdio};

use cauldron_client::{Client, Options, QoS};
use common::*;
use tokio::io::AsyncWriteExt;

async fn run(program: &str, args: &[&str]) -> Output {
    let program = if program == "cauldron" { env!("CARGO_BIN_EXE_cauldron") } else { program };
    let child = tokio::process::Command::new(program).args(args).kill_on_drop(true).output();
    tokio::time::timeout(WAIT, child).await.expect("in time").expect("the client runs")
}

fn port(addr: &str) -> &str {
    addr.rsplit(':').next().unwrap()
}

/// Runs `cauldron <tool>` and `mosquitto_<tool>` with the same flags; returns both outputs.
async fn both(tool: &str, args: &[&str]) -> (Output, Output) {
    let ours: Vec<&str> = std::iter::once(tool).chain(args.iter().copied()).collect();
    let theirs = run(&format!("mosquitto_{tool}"), args).await;
    (run("cauldron", &ours).await, theirs)
}

/// Publishes three retained messages with `cauldron pub`, then reads them back with both `sub`s
/// under several output flags; the outputs must be identical.
async fn sub_output_matches(port: &str) {
    // Retained messages reach a new subscriber at once and in the same order for both tools (at
    // QoS 2 a client may hand a message over at PUBLISH or at PUBREL, which can change the order).
    for (topic, payload, qos) in
        [("tools/a", "plain", "0"), ("tools/b", "with \"quotes\"", "1"), ("tools/c/d", "a\tb", "1")]
    {
        let out = run("cauldron", &["pub", "-p", port, "-t", topic, "-m", payload, "-q", qos, "-r"]).await;
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    for format in [&["-v"][..], &[], &["-F", "%t|%p|%q|%r|%l|%x"], &["-N", "-v"], &["-T", "tools/b", "-v"]] {
        let mut args = vec!["-p", port, "-t", "tools/#", "-q", "1", "-W", "5"];
        args.extend_from_slice(format);
        let count = if format.contains(&"-T") { "2" } else { "3" };
        args.extend_from_slice(&["-C", count]);
        let (ours, theirs) = both("sub", &args).await;
        assert!(theirs.status.success() && ours.status.success(), "{format:?}: {ours:?}");
        assert_eq!(
            String::from_utf8_lossy(&ours.stdout),
            String::from_utf8_lossy(&theirs.stdout),
            "{format:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sub_prints_what_mosquitto_sub_prints() {
    let dir = data_dir("tools-sub");
    let broker = Cauldron::start(&dir, &[]).await;
    sub_output_matches(port(&broker.addr)).await;
    broker.terminate().await;
}

/// The tools are MQTT clients for any broker: the same checks with Mosquitto as the broker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tools_work_against_mosquitto() {
    let mosquitto = Mosquitto::start(&data_dir("tools-mosquitto"), "allow_anonymous true\n").await;
    let port = mosquitto.port.to_string();
    sub_output_matches(&port).await;
    let (client, mut messages) =
        Client::connect(Options::new(format!("127.0.0.1:{port}"), "watcher")).await.unwrap();
    client.subscribe("lines", QoS::ExactlyOnce).await.unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_cauldron"))
        .args(["pub", "-p", &port, "-t", "lines", "-l", "-q", "2", "-V", "5"])
        .stdin(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"first\nsecond\n").await.unwrap();
    assert!(child.wait().await.unwrap().success());
    for expected in ["first", "second"] {
        let message = tokio::time::timeout(WAIT, messages.recv()).await.unwrap().unwrap();
        assert_eq!(&message.payload[..], expected.as_bytes());
    }
    let (ours, theirs) = both("sub", &["-p", &port, "-t", "silent", "-W", "1"]).await;
    assert_eq!((ours.status.code(), theirs.status.code()), (Some(27), Some(27)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pub_sends_each_line_of_standard_input() {
    let dir = data_dir("tools-pub-lines");
    let broker = Cauldron::start(&dir, &[]).await;
    let (client, mut messages) =
        Client::connect(Options::new(broker.addr.as_str(), "watcher")).await.unwrap();
    client.subscribe("lines", QoS::ExactlyOnce).await.unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_cauldron"))
        .args(["pub", "-p", port(&broker.addr), "-t", "lines", "-l", "-q", "1"])
        .stdin(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // The last line has no newline: mosquitto_pub -l sends it too.
    child.stdin.take().unwrap().write_all(b"one\ntwo\n\nthree").await.unwrap();
    assert!(child.wait().await.unwrap().success());
    for expected in ["one", "two", "", "three"] {
        let message = tokio::time::timeout(WAIT, messages.recv()).await.unwrap().unwrap();
        assert_eq!(&message.payload[..], expected.as_bytes());
        assert_eq!(message.qos, QoS::AtLeastOnce);
    }
    broker.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_sessions_timeouts_and_retained_cleanup() {
    let dir = data_dir("tools-session");
    let broker = Cauldron::start(&dir, &[]).await;
    let port = port(&broker.addr);
    // -c -E: set up a persistent session and leave; what is published meanwhile waits for it.
    let setup = ["sub", "-p", port, "-i", "later", "-c", "-q", "1", "-t", "queued", "-E"];
    assert!(run("cauldron", &setup).await.status.success());
    assert!(run("mosquitto_pub", &["-p", port, "-t", "queued", "-m", "kept", "-q", "1"])
        .await
        .status
        .success());
    let resume = ["sub", "-p", port, "-i", "later", "-c", "-q", "1", "-t", "queued", "-C", "1", "-W", "5"];
    let out = run("cauldron", &resume).await;
    assert_eq!(String::from_utf8_lossy(&out.stdout), "kept\n");

    // -W: no message in time exits with mosquitto_sub's status 27.
    let (ours, theirs) = both("sub", &["-p", port, "-t", "silent", "-W", "1"]).await;
    assert_eq!(ours.status.code(), Some(27));
    assert_eq!(ours.status.code(), theirs.status.code());

    // --remove-retained clears what it sees; a later subscriber gets nothing retained.
    assert!(run("cauldron", &["pub", "-p", port, "-t", "stale/x", "-m", "old", "-r"]).await.status.success());
    let clear = ["sub", "-p", port, "-t", "stale/#", "--remove-retained", "-C", "1", "-W", "5"];
    assert!(run("cauldron", &clear).await.status.success());
    let out = run("mosquitto_sub", &["-p", port, "-t", "stale/#", "--retained-only", "-W", "1"]).await;
    assert_eq!(String::from_utf8_lossy(&out.stdout), "");
    broker.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_ca_client_certificates_and_insecure() {
    let dir = data_dir("tools-tls");
    let pki = pki(&dir.join("pki"));
    let file = |p: &std::path::Path| p.to_str().unwrap().to_string();
    let (ca, cert, key) = (file(&pki.ca), file(&pki.client_cert), file(&pki.client_key));
    let args = ["--tls-listen", "0.0.0.0:0", "--certfile", &file(&pki.server_cert), "--keyfile"];
    let broker = Cauldron::start(
        &dir,
        &[&args[..], &[&file(&pki.server_key), "--cafile", &ca, "--require-certificate"]].concat(),
    )
    .await;
    let port = port(&broker.listeners[1]);
    let tls = ["--cafile", ca.as_str(), "--cert", cert.as_str(), "--key", key.as_str()];
    let publish =
        [&["pub", "-h", "localhost", "-p", port, "-t", "secure", "-m", "over tls", "-r"][..], &tls].concat();
    let out = run("cauldron", &publish).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // Mosquitto's client reads what ours published, over TLS with the same files.
    let read = [&["-h", "127.0.0.1", "-p", port, "-t", "secure", "-C", "1", "-W", "5"][..], &tls].concat();
    let out = run("mosquitto_sub", &read).await;
    assert_eq!(String::from_utf8_lossy(&out.stdout), "over tls\n");
    let ours = |extra: &'static [&'static str], host: &'static str| {
        let mut args = vec!["sub", "-h", host, "-p", port, "-t", "secure", "-C", "1", "-W", "5"];
        args.extend_from_slice(extra);
        args
    };
    let out = run("cauldron", &[&ours(&[], "127.0.0.1")[..], &tls].concat()).await;
    assert_eq!(String::from_utf8_lossy(&out.stdout), "over tls\n");
    // The server certificate names 127.0.0.1 and localhost, not 127.0.0.2: refused unless --insecure.
    let out = run("cauldron", &[&ours(&[], "127.0.0.2")[..], &tls].concat()).await;
    assert!(!out.status.success() && out.stdout.is_empty());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("certificate"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run("cauldron", &[&ours(&["--insecure"], "127.0.0.2")[..], &tls].concat()).await;
    assert_eq!(String::from_utf8_lossy(&out.stdout), "over tls\n");
    // Without a client certificate this listener refuses the handshake.
    let out = run("cauldron", &[&ours(&[], "127.0.0.1")[..], &["--cafile", ca.as_str()]].concat()).await;
    assert!(!out.status.success() && out.stdout.is_empty());
    broker.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debug_flag_prints_every_packet() {
    let dir = data_dir("tools-debug");
    let broker = Cauldron::start(&dir, &[]).await;
    let out =
        run("cauldron", &["pub", "-p", port(&broker.addr), "-t", "dbg", "-m", "hello", "-q", "2", "-d"])
            .await;
    assert!(out.status.success());
    let trace = String::from_utf8_lossy(&out.stderr);
    let expected = [
        "sending CONNECT",
        "received CONNACK",
        "sending PUBLISH (d0, q2, r0, m1, 'dbg', ... (5 bytes))",
        "received PUBREC",
        "sending PUBREL",
        "received PUBCOMP",
        "sending DISCONNECT",
    ];
    let mut at = 0;
    for line in expected {
        at += trace[at..].find(line).unwrap_or_else(|| panic!("{line:?} in order in {trace}"));
    }
    broker.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt5_properties_with_dash_d_reach_the_other_side() {
    let dir = data_dir("tools-properties");
    let broker = Cauldron::start(&dir, &[]).await;
    let port = port(&broker.addr);
    let publish = [
        "pub",
        "-p",
        port,
        "-V",
        "5",
        "-r",
        "-q",
        "1",
        "-t",
        "props/a",
        "-m",
        "hi",
        "-D",
        "publish",
        "content-type",
        "text/plain",
        "-D",
        "publish",
        "correlation-data",
        "abc",
        "-D",
        "publish",
        "payload-format-indicator",
        "1",
        "-D",
        "publish",
        "user-property",
        "k1",
        "v1",
        "-D",
        "publish",
        "user-property",
        "k2",
        "v2",
        "-D",
        "publish",
        "response-topic",
        "r/t",
        "-D",
        "connect",
        "session-expiry-interval",
        "0",
    ];
    let out = run("cauldron", &publish).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // Both subscribers print the same properties, and the subscription identifier each sent.
    let read = [
        "-p",
        port,
        "-V",
        "5",
        "-t",
        "props/#",
        "-C",
        "1",
        "-W",
        "5",
        "-D",
        "subscribe",
        "subscription-identifier",
        "7",
        "-F",
        "[%C][%D][%F][%P][%R][%S][%A]|%p",
    ];
    let (ours, theirs) = both("sub", &read).await;
    assert_eq!(String::from_utf8_lossy(&theirs.stdout), "[text/plain][abc][1][k1:v1 k2:v2][r/t][7][]|hi\n");
    assert_eq!(String::from_utf8_lossy(&ours.stdout), String::from_utf8_lossy(&theirs.stdout));
    // The same refusal as mosquitto_pub for a property in the wrong packet.
    let wrong = ["pub", "-p", port, "-V", "5", "-t", "x", "-m", "y", "-D", "connect", "content-type", "a"];
    let out = run("cauldron", &wrong).await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("content-type property not allowed for connect"));
    // Will properties travel with the will.
    let mut dying = tokio::process::Command::new(env!("CARGO_BIN_EXE_cauldron"))
        .args([
            "sub",
            "-p",
            port,
            "-V",
            "5",
            "-t",
            "nothing",
            "--will-topic",
            "props/will",
            "--will-payload",
            "gone",
        ])
        .args(["-D", "will", "content-type", "will/type", "-D", "will", "user-property", "w", "1"])
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let watcher = tokio::process::Command::new("mosquitto_sub")
        .args(["-p", port, "-V", "5", "-t", "props/will", "-C", "1", "-W", "10", "-F", "%C %P %p"])
        .output();
    let watcher = tokio::spawn(watcher);
    tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    dying.kill().await.unwrap();
    let out = watcher.await.unwrap().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "will/type w:1 gone\n");
    broker.terminate().await;
}
