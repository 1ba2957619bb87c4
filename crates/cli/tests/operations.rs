//! What an operator sees, black-box: `$SYS` values, `/metrics` read by Prometheus' own parser,
//! health endpoints, connection limits, and shutdown.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use cauldron_client::{Client, Options, Protocol, QoS};
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A plain HTTP/1.0 GET: status code and body.
async fn get(addr: &str, path: &str) -> (u16, String) {
    let response = http(addr, "GET", path, &[], b"").await;
    (response.status, response.body)
}

async fn check_metrics(http: &str, checks: &[&str]) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/check_metrics.py");
    let url = format!("http://{http}/metrics");
    let out =
        tokio::process::Command::new("python3").arg(script).arg(&url).args(checks).output().await.unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sys_tree_reports_true_values() {
    let dir = data_dir("sys");
    let broker = Cauldron::start(&dir, &["--sys-interval", "1"]).await;
    let mut clients = Vec::new();
    for i in 0..3 {
        let (client, _) = Client::connect(Options::new(&broker.addr, format!("c{i}"))).await.unwrap();
        clients.push(client);
    }
    clients[0].subscribe("a/#", QoS::AtLeastOnce).await.unwrap();
    clients[0].subscribe("b/+", QoS::AtMostOnce).await.unwrap();
    for i in 0..5 {
        clients[1].publish("a/x", i.to_string(), QoS::AtLeastOnce, false).await.unwrap();
    }
    clients[1].publish("a/kept", "r", QoS::AtLeastOnce, true).await.unwrap();
    let (watcher, mut messages) = Client::connect(Options::new(&broker.addr, "watcher")).await.unwrap();
    watcher.subscribe("$SYS/broker/#", QoS::AtMostOnce).await.unwrap();

    // 4 clients, 3 subscriptions, 6 PUBLISH received from clients.
    let want = [
        ("$SYS/broker/clients/connected", "4"),
        ("$SYS/broker/clients/total", "4"),
        ("$SYS/broker/subscriptions/count", "3"),
        ("$SYS/broker/publish/messages/received", "6"),
    ];
    let mut seen: HashMap<String, String> = HashMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !want.iter().all(|(t, v)| seen.get(*t).map(String::as_str) == Some(*v)) {
        let message = tokio::time::timeout_at(deadline, messages.recv())
            .await
            .unwrap_or_else(|_| panic!("$SYS so far: {seen:?}"))
            .unwrap();
        seen.insert(message.topic.to_string(), String::from_utf8_lossy(&message.payload).into_owned());
    }
    assert!(seen["$SYS/broker/version"].starts_with("cauldron version "));
    assert!(seen["$SYS/broker/uptime"].ends_with(" seconds"));
    assert!(seen.contains_key("$SYS/broker/load/messages/received/1min"));
    assert!(seen.contains_key("$SYS/broker/retained messages/count"));

    // A filter starting with a wildcard does not see $SYS [MQTT-4.7.2-1].
    let (all, mut everything) = Client::connect(Options::new(&broker.addr, "everything")).await.unwrap();
    all.subscribe("#", QoS::AtMostOnce).await.unwrap();
    while let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(1500), everything.recv()).await {
        assert!(!m.topic.starts_with('$'), "{} reached a '#' subscriber", m.topic);
    }
    broker.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_endpoint_parses_and_counts() {
    let dir = data_dir("metrics");
    let broker = Cauldron::start(&dir, &["--sys-interval", "0"]).await;
    assert_eq!(get(&broker.http, "/healthz").await.0, 200);
    assert_eq!(get(&broker.http, "/readyz").await.0, 200);
    let (sub, mut messages) = Client::connect(Options::new(&broker.addr, "sub")).await.unwrap();
    sub.subscribe("m", QoS::AtLeastOnce).await.unwrap();
    let (publisher, _) = Client::connect(Options::new(&broker.addr, "pub")).await.unwrap();
    for _ in 0..3 {
        publisher.publish("m", "x", QoS::AtLeastOnce, false).await.unwrap();
    }
    publisher.publish("m", "y", QoS::AtMostOnce, true).await.unwrap();
    for _ in 0..4 {
        tokio::time::timeout(WAIT, messages.recv()).await.unwrap().unwrap();
    }
    // A v5 client that says its packets may be at most 10 bytes gets nothing bigger.
    let small = cauldron_proto::Properties { maximum_packet_size: Some(10), ..Default::default() };
    let (tiny, _) =
        Client::connect(Options::new(&broker.addr, "tiny").protocol(Protocol::V5).properties(small))
            .await
            .unwrap();
    tiny.subscribe("m", QoS::AtMostOnce).await.unwrap();
    publisher.publish("m", "far too large for it", QoS::AtMostOnce, false).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    check_metrics(
        &broker.http,
        &[
            "cauldron_connections=3",
            "cauldron_connections_total=3",
            "cauldron_messages_received_total{qos=1}=3",
            "cauldron_messages_received_total{qos=0}=2",
            "cauldron_messages_sent_total{qos=1}=3",
            "cauldron_packets_received_total{type=connect}=3",
            "cauldron_packets_sent_total{type=puback}=3",
            "cauldron_messages_dropped_total{reason=too_large}=1",
            "cauldron_retained_messages=1",
            "cauldron_subscriptions=2",
            "cauldron_sessions_online=3",
            "cauldron_bytes_received_total>=100",
            "cauldron_store_commit_seconds_count>=1",
        ],
    )
    .await;
    broker.terminate().await;
}

/// Connects and returns whether the broker answered CONNACK (rather than closing at once).
async fn accepted(addr: &str, id: &str) -> Option<Client> {
    Client::connect(Options::new(addr, id)).await.ok().map(|(client, _)| client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_limit_and_rate_limit_refuse_and_count() {
    let dir = data_dir("limits");
    let broker = Cauldron::start(&dir, &["--max-connections", "2", "--sys-interval", "0"]).await;
    let first = accepted(&broker.addr, "one").await.expect("under the limit");
    let _second = accepted(&broker.addr, "two").await.expect("at the limit");
    assert!(accepted(&broker.addr, "three").await.is_none(), "over the limit");
    first.disconnect().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(accepted(&broker.addr, "four").await.is_some(), "room again");
    check_metrics(&broker.http, &["cauldron_connections_refused_total{reason=max_connections}=1"]).await;
    broker.terminate().await;

    let dir = data_dir("rate");
    let broker = Cauldron::start(&dir, &["--connection-rate-per-ip", "3", "--sys-interval", "0"]).await;
    let mut kept = Vec::new();
    for i in 0..3 {
        kept.push(accepted(&broker.addr, &format!("burst{i}")).await.expect("within the burst"));
    }
    assert!(accepted(&broker.addr, "too-fast").await.is_none());
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(accepted(&broker.addr, "later").await.is_some(), "tokens refill");
    check_metrics(&broker.http, &["cauldron_connections_refused_total{reason=rate_limited}=1"]).await;
    broker.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_tells_mqtt5_clients_and_exits_cleanly() {
    let dir = data_dir("shutdown");
    let broker = Cauldron::start(&dir, &["--sys-interval", "0"]).await;
    let mut raw = TcpStream::connect(&broker.addr).await.unwrap();
    let connect = cauldron_proto::Connect {
        protocol: cauldron_proto::Protocol::V5,
        clean_start: true,
        keep_alive: 0,
        client_id: "v5".into(),
        will: None,
        username: None,
        password: None,
        properties: Default::default(),
        bridge: false,
    };
    let mut buf = cauldron_proto::BytesMut::new();
    cauldron_proto::Packet::Connect(Box::new(connect))
        .encode(cauldron_proto::Protocol::V5, &mut buf)
        .unwrap();
    raw.write_all(&buf).await.unwrap();
    broker.terminate().await;
    let mut got = cauldron_proto::BytesMut::new();
    while raw.read_buf(&mut got).await.unwrap() > 0 {}
    let connack = cauldron_proto::decode(&mut got, cauldron_proto::Protocol::V5, usize::MAX).unwrap();
    assert!(matches!(connack, Some(cauldron_proto::Packet::ConnAck(_))));
    let disconnect = cauldron_proto::decode(&mut got, cauldron_proto::Protocol::V5, usize::MAX).unwrap();
    let Some(cauldron_proto::Packet::Disconnect(d)) = disconnect else { panic!("{disconnect:?}") };
    assert_eq!(d.reason, cauldron_proto::ReasonCode::ServerShuttingDown);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wills_are_published_and_stored_at_shutdown() {
    let dir = data_dir("shutdown-will");
    let broker = Cauldron::start(&dir, &["--sys-interval", "0"]).await;
    // A persistent watcher, offline at shutdown, so the will waits for it in the store.
    let (watcher, _) =
        Client::connect(Options::new(&broker.addr, "watcher").clean_start(false)).await.unwrap();
    watcher.subscribe("wills/#", QoS::AtLeastOnce).await.unwrap();
    watcher.disconnect().await.unwrap();
    let options =
        Options::new(&broker.addr, "device").will("wills/device", "offline", QoS::AtLeastOnce, false);
    let (_device, _) = Client::connect(options).await.unwrap();
    broker.terminate().await;

    let broker = Cauldron::start(&dir, &["--sys-interval", "0"]).await;
    let (_watcher, mut messages) =
        Client::connect(Options::new(&broker.addr, "watcher").clean_start(false)).await.unwrap();
    let will = tokio::time::timeout(WAIT, messages.recv()).await.expect("the will was kept").unwrap();
    assert_eq!((&will.topic[..], &will.payload[..]), ("wills/device", &b"offline"[..]));
    broker.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_listener_connection_limit_from_the_command_line() {
    let dir = data_dir("listener-limit");
    let broker = Cauldron::start(&dir, &["--listener-max-connections", "1", "--sys-interval", "0"]).await;
    let _first = accepted(&broker.addr, "first").await.expect("room for one");
    assert!(accepted(&broker.addr, "second").await.is_none());
    check_metrics(&broker.http, &["cauldron_connections_refused_total{reason=max_connections}=1"]).await;
    broker.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_carry_mosquitto_style_connection_lines() {
    let dir = data_dir("json-logs");
    let mut broker = Cauldron::start(&dir, &["--sys-interval", "0", "--log-format", "json"]).await;
    let (client, _) =
        Client::connect(Options::new(&broker.addr, "logged").credentials("jane", "pw")).await.unwrap();
    let line = broker.logged("New client connected").await;
    assert!(line.starts_with('{') && line.ends_with('}'), "one JSON object per line: {line}");
    assert!(line.contains("\"level\":\"INFO\""), "{line}");
    assert!(line.contains("as logged (p2, c1, k60, u'jane')."), "{line}");
    client.disconnect().await.unwrap();
    assert!(broker.logged("Client logged disconnected.").await.starts_with('{'));
    broker.terminate().await;
}
