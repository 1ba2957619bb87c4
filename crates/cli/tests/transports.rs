//! TLS listeners with certificates made by the test (rcgen), driven by Mosquitto's clients.

mod common;

use std::path::Path;

use common::*;

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

async fn mosquitto(program: &str, args: &[&str]) -> std::process::Output {
    let child = tokio::process::Command::new(program).args(args).kill_on_drop(true).output();
    tokio::time::timeout(WAIT, child).await.expect("in time").expect("mosquitto clients are installed")
}

/// Publishes one retained message and reads it back, both over TLS with the given extra flags.
async fn round_trip(port: &str, tls: &[&str], topic: &str) -> (bool, String) {
    let mut publish = vec!["-h", "127.0.0.1", "-p", port, "-t", topic, "-m", "over tls", "-r", "-q", "1"];
    publish.extend_from_slice(tls);
    let out = mosquitto("mosquitto_pub", &publish).await;
    if !out.status.success() {
        return (false, String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let mut subscribe = vec!["-h", "127.0.0.1", "-p", port, "-t", topic, "-C", "1", "-W", "5"];
    subscribe.extend_from_slice(tls);
    let out = mosquitto("mosquitto_sub", &subscribe).await;
    // mosquitto_sub exits 0 when every subscription is refused, so success means the message.
    let received = String::from_utf8_lossy(&out.stdout).into_owned();
    (out.status.success() && received.trim() == "over tls", received)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_1_2_and_1_3_with_a_test_ca() {
    let dir = data_dir("tls");
    let pki = pki(&dir.join("pki"));
    let args = [
        "--tls-listen",
        "127.0.0.1:0",
        "--certfile",
        path(&pki.server_cert),
        "--keyfile",
        path(&pki.server_key),
    ];
    let broker = Cauldron::start(&dir, &args).await;
    let port = broker.listeners[1].rsplit(':').next().unwrap().to_string();
    for version in ["tlsv1.2", "tlsv1.3"] {
        let (ok, out) =
            round_trip(&port, &["--cafile", path(&pki.ca), "--tls-version", version], "tls/t").await;
        assert!(ok && out.trim() == "over tls", "{version}: {out}");
    }
    // A client that does not trust our CA gets no session.
    let (ok, _) = round_trip(&port, &["--cafile", "/etc/ssl/certs/ca-certificates.crt"], "tls/x").await;
    assert!(!ok);
    broker.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_name_the_user_for_the_acl() {
    let dir = data_dir("tls-identity");
    let pki = pki(&dir.join("pki"));
    let acl = dir.join("acl");
    std::fs::write(&acl, "user jane\ntopic readwrite owntracks/jane/#\n").unwrap();
    let args = [
        "--tls-listen",
        "127.0.0.1:0",
        "--certfile",
        path(&pki.server_cert),
        "--keyfile",
        path(&pki.server_key),
        "--cafile",
        path(&pki.ca),
        "--require-certificate",
        "--use-identity-as-username",
        "--acl-file",
        path(&acl),
    ];
    let broker = Cauldron::start(&dir, &args).await;
    let port = broker.listeners[1].rsplit(':').next().unwrap().to_string();
    let with_cert =
        ["--cafile", path(&pki.ca), "--cert", path(&pki.client_cert), "--key", path(&pki.client_key)];
    let (ok, out) = round_trip(&port, &with_cert, "owntracks/jane/phone").await;
    assert!(ok && out.trim() == "over tls", "CN=jane may use her topics: {out}");
    let (ok, out) = round_trip(&port, &with_cert, "owntracks/bob/phone").await;
    assert!(!ok, "and nobody else's: {out}");
    let (ok, _) = round_trip(&port, &["--cafile", path(&pki.ca)], "owntracks/jane/phone").await;
    assert!(!ok, "no certificate, no connection");
    broker.terminate().await;
}

/// mosquitto.conf's `crlfile` was once only warned about, so a revoked certificate connected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_client_certificate_is_refused() {
    let dir = data_dir("tls-crl");
    let pki = pki(&dir.join("pki"));
    let port = free_port().to_string();
    let conf = dir.join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            "listener {port} 127.0.0.1\ncertfile {}\nkeyfile {}\ncafile {}\ncrlfile {}\n\
             require_certificate true\nallow_anonymous true\n",
            path(&pki.server_cert),
            path(&pki.server_key),
            path(&pki.ca),
            path(&pki.crl)
        ),
    )
    .unwrap();
    let broker = Cauldron::start(&dir, &["--mosquitto-conf", path(&conf)]).await;
    let good = ["--cafile", path(&pki.ca), "--cert", path(&pki.client_cert), "--key", path(&pki.client_key)];
    let (ok, out) = round_trip(&port, &good, "crl/t").await;
    assert!(ok, "a good certificate connects: {out}");
    let revoked =
        ["--cafile", path(&pki.ca), "--cert", path(&pki.revoked_cert), "--key", path(&pki.revoked_key)];
    let (ok, out) = round_trip(&port, &revoked, "crl/t").await;
    assert!(!ok, "a revoked one does not: {out}");
    broker.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_key_file_stops_the_start_and_names_it() {
    let dir = data_dir("tls-bad");
    let pki = pki(&dir.join("pki"));
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_cauldron"))
        .args(["serve", "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0", "--tls-listen", "127.0.0.1:0"])
        .args(["--certfile", path(&pki.server_cert), "--keyfile", "/nonexistent/server.key", "--data-dir"])
        .arg(&dir)
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/server.key"));
}

async fn paho_ws(port: &str, path: &str, cafile: Option<&Path>) -> std::process::Output {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/paho_ws.py");
    let mut command = tokio::process::Command::new("python3");
    command.args([script, port, path]);
    if let Some(ca) = cafile {
        command.arg(ca);
    }
    tokio::time::timeout(WAIT, command.output()).await.expect("in time").unwrap()
}

/// A broker with a WebSocket listener (`listeners[1]`) and a WebSocket-over-TLS one (`[2]`).
async fn websocket_broker(dir: &Path) -> (Cauldron, Pki) {
    let pki = pki(&dir.join("pki"));
    let (cert, key) = (path(&pki.server_cert).to_string(), path(&pki.server_key).to_string());
    let args =
        ["--ws-listen", "127.0.0.1:0", "--wss-listen", "127.0.0.1:0", "--certfile", &cert, "--keyfile", &key];
    (Cauldron::start(dir, &args).await, pki)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_and_websocket_over_tls_with_paho() {
    let dir = data_dir("ws");
    let (broker, pki) = websocket_broker(&dir).await;
    let port = |i: usize| broker.listeners[i].rsplit(':').next().unwrap().to_string();
    let out = paho_ws(&port(1), "/mqtt", None).await;
    assert!(
        out.status.success(),
        "ws: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let out = paho_ws(&port(2), "/mqtt", Some(&pki.ca)).await;
    assert!(
        out.status.success(),
        "wss: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let out = paho_ws(&port(1), "/elsewhere", None).await;
    assert!(!out.status.success(), "only the configured path upgrades");
    broker.terminate().await;
}

/// Subscribes and publishes through `options`: a small message and one of 200 KB, which spans
/// many WebSocket frames' worth of bytes.
async fn client_round_trip(options: cauldron_client::Options) {
    use cauldron_client::{Client, QoS};
    let (client, mut messages) = Client::connect(options).await.expect("connects");
    client.subscribe("ws/t", QoS::AtLeastOnce).await.unwrap();
    let big = vec![b'x'; 200_000];
    client.publish("ws/t", "hello", QoS::AtLeastOnce, false).await.unwrap();
    client.publish("ws/t", big.clone(), QoS::ExactlyOnce, false).await.unwrap();
    let first = tokio::time::timeout(WAIT, messages.recv()).await.unwrap().unwrap();
    assert_eq!(&first.payload[..], b"hello");
    let second = tokio::time::timeout(WAIT, messages.recv()).await.unwrap().unwrap();
    assert_eq!(second.payload.len(), big.len());
    client.disconnect().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_library_speaks_websocket_and_websocket_over_tls() {
    use cauldron_client::{Options, Protocol, Tls};
    let dir = data_dir("client-ws");
    let (broker, pki) = websocket_broker(&dir).await;
    let port = |i: usize| broker.listeners[i].rsplit(':').next().unwrap().to_string();
    let ws = Options::from_url(&format!("ws://127.0.0.1:{}/mqtt", port(1)), "ws-client").unwrap();
    client_round_trip(ws.protocol(Protocol::V5)).await;
    let wss = Options::from_url(&format!("wss://127.0.0.1:{}/mqtt", port(2)), "wss-client").unwrap();
    client_round_trip(wss.tls(Tls::new(&pki.ca, None, true).unwrap())).await;
    // wss:// without a CA to trust is refused before anything is sent, not sent in clear.
    let untrusted = Options::from_url(&format!("wss://127.0.0.1:{}/mqtt", port(2)), "no-ca").unwrap();
    assert!(cauldron_client::Client::connect(untrusted).await.is_err());
    // (Debian's Mosquitto 2.0.11 cannot open a WebSocket listener on this machine: "Unable to
    // start any listening sockets". The broker side of these listeners is checked with paho-mqtt
    // above, so both ends are checked against a third party.)
    broker.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_renewed_certificates() {
    let dir = data_dir("tls-reload");
    let first = pki(&dir.join("pki"));
    let args = [
        "--tls-listen",
        "127.0.0.1:0",
        "--certfile",
        path(&first.server_cert),
        "--keyfile",
        path(&first.server_key),
    ];
    let mut broker = Cauldron::start(&dir, &args).await;
    let port = broker.listeners[1].rsplit(':').next().unwrap().to_string();
    let old_ca = dir.join("old-ca.pem");
    std::fs::copy(&first.ca, &old_ca).unwrap();
    assert!(round_trip(&port, &["--cafile", path(&old_ca)], "r/1").await.0);
    // "Renewal": new certificates from a new CA in the same files.
    let renewed = pki(&dir.join("pki"));
    broker.hangup().await;
    assert!(
        round_trip(&port, &["--cafile", path(&renewed.ca)], "r/2").await.0,
        "the renewed certificate is served"
    );
    assert!(!round_trip(&port, &["--cafile", path(&old_ca)], "r/3").await.0, "the old one is gone");
    broker.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_listener() {
    let dir = data_dir("ipv6");
    let broker = Cauldron::start(&dir, &["--listen", "[::1]:0"]).await;
    let addr = broker.listeners[1].clone();
    assert!(addr.starts_with("[::1]:"), "{addr}");
    let (client, mut messages) =
        cauldron_client::Client::connect(cauldron_client::Options::new(&addr, "six"))
            .await
            .expect("connects over IPv6");
    client.subscribe("v6", cauldron_client::QoS::AtLeastOnce).await.unwrap();
    client.publish("v6", "hello", cauldron_client::QoS::AtLeastOnce, false).await.unwrap();
    let got = tokio::time::timeout(WAIT, messages.recv()).await.unwrap().unwrap();
    assert_eq!(&got.payload[..], b"hello");
    broker.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unix_socket_listener_with_mosquitto_clients() {
    let dir = data_dir("unix");
    std::fs::create_dir_all(&dir).unwrap();
    let socket = dir.join("mqtt.sock");
    let broker = Cauldron::start(&dir, &["--unix-listen", path(&socket)]).await;
    assert_eq!(broker.listeners[1], format!("unix:{}", socket.display()));
    let out = mosquitto(
        "mosquitto_pub",
        &["--unix", path(&socket), "-t", "local/t", "-m", "via unix", "-r", "-q", "1"],
    )
    .await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out =
        mosquitto("mosquitto_sub", &["--unix", path(&socket), "-t", "local/t", "-C", "1", "-W", "5"]).await;
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "via unix");
    broker.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_protocol_names_the_real_client() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = data_dir("proxy");
    let mut broker = Cauldron::start(&dir, &["--proxy-listen", "127.0.0.1:0"]).await;
    let addr = broker.listeners[1].clone();
    let connect = |id: &str| {
        let mut buf = cauldron_proto::BytesMut::new();
        let connect = cauldron_proto::Connect {
            protocol: cauldron_proto::Protocol::V3_1_1,
            clean_start: true,
            keep_alive: 0,
            client_id: id.into(),
            will: None,
            username: None,
            password: None,
            properties: Default::default(),
            bridge: false,
        };
        cauldron_proto::Packet::Connect(Box::new(connect))
            .encode(cauldron_proto::Protocol::V3_1_1, &mut buf)
            .unwrap();
        buf.to_vec()
    };
    let mut v2 = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    v2.extend_from_slice(&[0x21, 0x11, 0, 12, 198, 51, 100, 9, 10, 0, 0, 1, 0x1f, 0x90, 0x07, 0x5b]);
    let headers: [(&str, Vec<u8>, &str); 2] = [
        ("behind-v1", b"PROXY TCP4 203.0.113.7 10.0.0.1 51234 1883\r\n".to_vec(), "203.0.113.7:51234"),
        ("behind-v2", v2, "198.51.100.9:8080"),
    ];
    for (id, header, real) in headers {
        let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let mut bytes = header;
        bytes.extend(connect(id));
        stream.write_all(&bytes).await.unwrap();
        let mut connack = [0u8; 4];
        stream.read_exact(&mut connack).await.unwrap();
        assert_eq!(connack, [0x20, 2, 0, 0], "{id}: accepted");
        let line = broker.logged(&format!("as {id} ")).await;
        assert!(line.contains(&format!("New client connected from {real} as {id}")), "{line}");
    }
    // Without a header there is no MQTT on this listener.
    let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    stream.write_all(&connect("no-header")).await.unwrap();
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(WAIT, stream.read_to_end(&mut rest)).await;
    assert!(rest.is_empty(), "closed without a CONNACK");
    broker.terminate().await;
}
