//! Bridges, black-box: the real binary bridging to Mosquitto 2.0 and to another cauldron, over
//! real sockets, with remotes killed and started again.

mod common;

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use cauldron_client::{Client, Messages, Options, Protocol, QoS};
use cauldron_proto::{Properties, Publish};
use common::*;

async fn next(messages: &mut Messages) -> Publish {
    tokio::time::timeout(WAIT, messages.recv()).await.expect("message in time").expect("connected")
}

async fn nothing(messages: &mut Messages) {
    if let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(700), messages.recv()).await {
        panic!("unexpected {} {:?}", m.topic, m.payload);
    }
}

async fn subscriber(addr: &str, id: &str, filters: &[&str]) -> (Client, Messages) {
    let (client, messages) = Client::connect(Options::new(addr, id)).await.unwrap();
    for filter in filters {
        client.subscribe(*filter, QoS::ExactlyOnce).await.unwrap();
    }
    (client, messages)
}

/// A cauldron started on `toml` (written into `dir`), its listener on `port`.
async fn cauldron_with(dir: &Path, port: u16, toml: &str) -> Cauldron {
    std::fs::create_dir_all(dir).unwrap();
    let config = dir.join("cauldron.toml");
    let text = format!(
        "data_dir = \"data\"\nsys_interval = 0\n\n[[listener]]\naddress = \"127.0.0.1:{port}\"\n\n{toml}"
    );
    std::fs::write(&config, text).unwrap();
    Cauldron::start(dir, &["--config", config.to_str().unwrap()]).await
}

/// Waits until `messages` brings `topic` with `payload`, skipping others.
async fn until(messages: &mut Messages, topic: &str, payload: &str) -> Publish {
    loop {
        let m = next(messages).await;
        if m.topic == topic && &m.payload[..] == payload.as_bytes() {
            return m;
        }
    }
}

/// A `[[bridge]]` to Mosquitto: out with prefixes remapped, in, both without echo, QoS 1 and 2,
/// a retained message that was there before the bridge connected, and the state notification.
#[tokio::test]
async fn to_mosquitto_each_way_with_prefixes_qos_and_retained() {
    let dir = data_dir("bridge-mosquitto");
    let remote = Mosquitto::start(&dir.join("mosquitto"), "allow_anonymous true\n").await;
    let remote_addr = format!("127.0.0.1:{}", remote.port);
    let port = free_port();
    let local_addr = format!("127.0.0.1:{port}");
    let (early, _) = Client::connect(Options::new(&remote_addr, "early")).await.unwrap();
    drop(early);
    // Retained here before the bridge exists: sent to the remote when the bridge connects.
    let bridge = format!(
        "[[bridge]]\nconnection = \"site\"\naddress = \"{remote_addr}\"\nremote_clientid = \"site-bridge\"\n\
         topic = [\"sensors/# out 1 home/ site1/\", \"cmd/# in 2 home/ site1/\", \"chat/# both 1\"]\n"
    );
    let local = cauldron_with(&dir, port, &bridge).await;
    let (at_remote, mut remote_messages) =
        subscriber(&remote_addr, "remote-sub", &["site1/#", "chat/#", "$SYS/broker/connection/#"]).await;
    until(&mut remote_messages, "$SYS/broker/connection/site-bridge/state", "1").await;
    let (at_home, mut home_messages) = subscriber(&local_addr, "home-sub", &["home/#", "chat/#"]).await;

    // Out, remapped, at the lower of the topic's QoS 1 and the message's.
    at_home.publish("home/sensors/t", "21.5", QoS::ExactlyOnce, false).await.unwrap();
    let m = until(&mut remote_messages, "site1/sensors/t", "21.5").await;
    assert_eq!(m.qos, QoS::AtLeastOnce);
    at_home.publish("home/sensors/t", "21.6", QoS::AtMostOnce, false).await.unwrap();
    let m = until(&mut remote_messages, "site1/sensors/t", "21.6").await;
    assert_eq!(m.qos, QoS::AtMostOnce);
    // In, remapped, QoS 2.
    at_remote.publish("site1/cmd/heat", "on", QoS::ExactlyOnce, false).await.unwrap();
    let m = until(&mut home_messages, "home/cmd/heat", "on").await;
    assert_eq!(m.qos, QoS::ExactlyOnce);
    // A topic of neither rule stays where it is.
    at_remote.publish("site1/other", "x", QoS::AtLeastOnce, false).await.unwrap();
    // Both ways, once each: no echo.
    at_home.publish("chat/a", "from home", QoS::AtLeastOnce, false).await.unwrap();
    at_remote.publish("chat/b", "from site", QoS::AtLeastOnce, false).await.unwrap();
    let mut seen_home = Vec::new();
    let mut seen_remote = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while tokio::time::Instant::now() < deadline {
        tokio::select! {
            Some(m) = home_messages.recv() => seen_home.push(m.topic.to_string()),
            Some(m) = remote_messages.recv() => seen_remote.push(m.topic.to_string()),
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    }
    seen_home.sort();
    seen_remote.sort();
    // (Each side also hears its own publishes; the remote's are still unread.)
    assert_eq!(seen_home, ["chat/a", "chat/b"]);
    assert_eq!(seen_remote, ["chat/a", "chat/b", "site1/cmd/heat", "site1/other"]);

    // Retained, out: kept as retained at the remote.
    at_home.publish("home/sensors/kept", "yes", QoS::AtLeastOnce, true).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_late, mut late) = subscriber(&remote_addr, "late", &["site1/sensors/kept"]).await;
    let m = next(&mut late).await;
    assert!(m.retain && &m.payload[..] == b"yes");

    // /metrics: the bridge is up and has moved messages both ways.
    let metrics = http(&local.http, "GET", "/metrics", &[], b"").await.body;
    assert!(metrics.contains("cauldron_bridge_connected{bridge=\"site\"} 1"), "{metrics}");
    let count = |name: &str| -> u64 {
        let line =
            metrics.lines().find(|l| l.starts_with(&format!("cauldron_{name}{{bridge=\"site\"}}"))).unwrap();
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    assert!(count("bridge_messages_in_total") >= 2 && count("bridge_messages_out_total") >= 3, "{metrics}");
    // `cauldron config check` shows the bridge and its topics.
    let check = std::process::Command::new(env!("CARGO_BIN_EXE_cauldron"))
        .args(["config", "check"])
        .arg(dir.join("cauldron.toml"))
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&check.stdout);
    assert!(
        report.contains("bridge site to 127.0.0.1:") && report.contains("home/sensors/# -> site1/sensors/#"),
        "{report}"
    );

    // The broker stopping says so at the remote, retained for whoever asks later.
    local.terminate().await;
    until(&mut remote_messages, "$SYS/broker/connection/site-bridge/state", "0").await;
    let (_later, mut later) =
        subscriber(&remote_addr, "later", &["$SYS/broker/connection/site-bridge/state"]).await;
    let state = next(&mut later).await;
    assert!(state.retain && &state.payload[..] == b"0");
}

/// Mosquitto bridging to cauldron with its default `try_private` (the 0x80 protocol bit):
/// cauldron sees a bridge and does not echo what it sends.
#[tokio::test]
async fn mosquitto_bridging_to_cauldron_gets_no_echo() {
    let dir = data_dir("bridge-from-mosquitto");
    let port = free_port();
    let local_addr = format!("127.0.0.1:{port}");
    let local = cauldron_with(&dir, port, "").await;
    let conf =
        format!("allow_anonymous true\nconnection to-cauldron\naddress {local_addr}\ntopic both/# both 1\n");
    let remote = Mosquitto::start(&dir.join("mosquitto"), &conf).await;
    let remote_addr = format!("127.0.0.1:{}", remote.port);
    let (at_local, mut local_messages) = subscriber(&local_addr, "local-sub", &["both/#"]).await;
    let (at_remote, mut remote_messages) = subscriber(&remote_addr, "remote-sub", &["both/#"]).await;
    // Wait for the bridge: its notification arrives at cauldron.
    let (_watch, mut watch) = subscriber(&local_addr, "watch", &["$SYS/broker/connection/#"]).await;
    let state = next(&mut watch).await;
    assert_eq!(&state.payload[..], b"1", "{}", state.topic);
    at_remote.publish("both/from-mosquitto", "m", QoS::AtLeastOnce, false).await.unwrap();
    at_local.publish("both/from-cauldron", "c", QoS::AtLeastOnce, false).await.unwrap();
    for messages in [&mut local_messages, &mut remote_messages] {
        let mut topics = vec![next(messages).await.topic.to_string(), next(messages).await.topic.to_string()];
        topics.sort();
        assert_eq!(topics, ["both/from-cauldron", "both/from-mosquitto"]);
        nothing(messages).await;
    }
    drop(local);
}

/// cauldron to cauldron over MQTT 5 and TLS, configured by a mosquitto.conf: properties cross,
/// `both` does not echo (No Local at the remote), and the remote's certificate is checked.
#[tokio::test]
async fn cauldron_to_cauldron_over_mqtt5_and_tls() {
    let dir = data_dir("bridge-tls");
    let certs = pki(&dir.join("pki"));
    let tls_port = free_port();
    let remote = Cauldron::start(
        &dir.join("remote"),
        &[
            "--tls-listen",
            &format!("127.0.0.1:{tls_port}"),
            "--certfile",
            certs.server_cert.to_str().unwrap(),
            "--keyfile",
            certs.server_key.to_str().unwrap(),
        ],
    )
    .await;
    let port = free_port();
    let conf = dir.join("bridge.conf");
    let write_conf = |ca: &Path| {
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\n\nconnection secure\naddress 127.0.0.1:{tls_port}\n\
                 bridge_protocol_version mqttv50\nbridge_cafile {}\nremote_clientid secure-bridge\ntopic both/# both 2\n",
                ca.display()
            ),
        )
        .unwrap();
    };
    write_conf(&certs.ca);
    let local = Cauldron::start(&dir.join("local"), &["--mosquitto-conf", conf.to_str().unwrap()]).await;
    let local_addr = format!("127.0.0.1:{port}");
    let v5 = |addr: &str, id: &str| Options::new(addr, id).protocol(Protocol::V5);
    let (watcher, mut watch) = Client::connect(v5(&remote.addr, "watch")).await.unwrap();
    watcher.subscribe("$SYS/broker/connection/#", QoS::AtLeastOnce).await.unwrap();
    until(&mut watch, "$SYS/broker/connection/secure-bridge/state", "1").await;
    let (at_local, mut local_messages) = Client::connect(v5(&local_addr, "l")).await.unwrap();
    at_local.subscribe("both/#", QoS::ExactlyOnce).await.unwrap();
    let (at_remote, mut remote_messages) = Client::connect(v5(&remote.addr, "r")).await.unwrap();
    at_remote.subscribe("both/#", QoS::ExactlyOnce).await.unwrap();

    let mut publish = Publish::new("both/typed", "{}");
    publish.qos = QoS::ExactlyOnce;
    publish.properties =
        Properties { content_type: Some("application/json".into()), ..Properties::default() };
    publish.properties.user_properties.push(("from".into(), "local".into()));
    at_local.publish_packet(publish).await.unwrap();
    let m = next(&mut remote_messages).await;
    assert_eq!((&m.topic[..], m.qos), ("both/typed", QoS::ExactlyOnce));
    assert_eq!(m.properties.content_type.as_deref(), Some("application/json"));
    assert_eq!(m.properties.user_properties, [("from".into(), "local".into())]);
    assert_eq!(&next(&mut local_messages).await.topic[..], "both/typed");
    at_remote.publish("both/back", "b", QoS::AtLeastOnce, false).await.unwrap();
    assert_eq!(&next(&mut local_messages).await.topic[..], "both/back");
    assert_eq!(&next(&mut remote_messages).await.topic[..], "both/back");
    nothing(&mut local_messages).await;
    nothing(&mut remote_messages).await;
    local.terminate().await;

    // A remote whose certificate the bridge's CA did not sign is never connected to.
    let other = pki(&dir.join("other-pki"));
    write_conf(&other.ca);
    let mut local = Cauldron::start(&dir.join("local"), &["--mosquitto-conf", conf.to_str().unwrap()]).await;
    let failed = local.logged("Bridge connection failed").await;
    assert!(failed.contains("secure"), "{failed}");
}

/// QoS 1 towards a remote that is killed and started again, and a bridging broker killed with
/// -9 while messages wait: every message acknowledged to the local publisher arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_messages_survive_remote_restarts_and_a_local_kill_9() {
    let dir = data_dir("bridge-restart");
    let remote_port = free_port();
    let remote_dir = dir.join("remote");
    let remote_addr = format!("127.0.0.1:{remote_port}");
    let remote = cauldron_with(&remote_dir, remote_port, "").await;
    // The collector keeps a session at the remote, so it misses nothing while that restarts.
    let collector = |addr: String| async move {
        let (client, messages) =
            Client::connect(Options::new(addr, "collector").clean_start(false)).await.unwrap();
        client.subscribe("load/#", QoS::AtLeastOnce).await.unwrap();
        (client, messages)
    };
    let (collector_client, mut collected) = collector(remote_addr.clone()).await;
    let port = free_port();
    let local_addr = format!("127.0.0.1:{port}");
    let bridge = format!(
        "[[bridge]]\nconnection = \"load\"\naddress = \"{remote_addr}\"\ntopic = \"load/# out 1\"\n\
         restart_timeout = \"1 2\"\n"
    );
    let local_dir = dir.join("local");
    let local = cauldron_with(&local_dir, port, &bridge).await;
    let (publisher, _) = Client::connect(Options::new(&local_addr, "publisher")).await.unwrap();
    let total = 600;
    let mut received = HashSet::new();
    let publishing = tokio::spawn(async move {
        for i in 0..total {
            publisher.publish(format!("load/{i}"), i.to_string(), QoS::AtLeastOnce, false).await.unwrap();
            if i % 100 == 99 {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    });
    // Take the remote away in the middle of it, and bring it back.
    while received.len() < 150 {
        received.insert(next(&mut collected).await.payload.to_vec());
    }
    drop((collector_client, collected));
    remote.kill9().await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let remote = cauldron_with(&remote_dir, remote_port, "").await;
    let (collector_client, mut collected) = collector(remote_addr.clone()).await;
    publishing.await.unwrap();
    while received.len() < total {
        match tokio::time::timeout(WAIT, collected.recv()).await {
            Ok(Some(m)) => received.insert(m.payload.to_vec()),
            _ => {
                let missing: Vec<_> =
                    (0..total).filter(|i| !received.contains(i.to_string().as_bytes())).collect();
                panic!("{} of {total} arrived; missing {missing:?}", received.len())
            }
        };
    }

    // Now with the remote down: messages wait in the bridge's stored session, the bridging
    // broker dies with -9, comes back, and delivers them once the remote returns.
    drop((collector_client, collected));
    remote.terminate().await;
    let (publisher, _) = Client::connect(Options::new(&local_addr, "publisher")).await.unwrap();
    for i in 0..100 {
        publisher.publish(format!("load/down/{i}"), format!("d{i}"), QoS::AtLeastOnce, false).await.unwrap();
    }
    local.kill9().await;
    let _local = cauldron_with(&local_dir, port, &bridge).await;
    let _remote = cauldron_with(&remote_dir, remote_port, "").await;
    let (_collector, mut collected) = collector(remote_addr).await;
    let mut down = HashSet::new();
    while down.len() < 100 {
        let m = next(&mut collected).await;
        if m.topic.starts_with("load/down/") {
            down.insert(m.payload.to_vec());
        }
    }
}
