//! Three nats-server and three cauldron nodes for a test, warmed up, one cluster at a time.

use std::time::Duration;

use cauldron_client::proto::{Protocol, QoS};
use cauldron_client::{Client, Messages, Options};

use super::nats::NatsCluster;
use super::{data_dir, Cauldron, WAIT};

/// One cluster at a time: each test starts several NATS servers and nodes, and two machines'
/// worth of processes on two cores make every wait a race.
pub static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

pub struct Nodes {
    pub nats: NatsCluster,
    pub nodes: Vec<Cauldron>,
    pub _turn: tokio::sync::MutexGuard<'static, ()>,
}

pub async fn cluster(name: &str) -> Nodes {
    cluster_with(name, &[]).await
}

/// A cluster whose nodes all get `extra` arguments too (the same files, say).
pub async fn cluster_with(name: &str, extra: &[&str]) -> Nodes {
    let turn = ONE_AT_A_TIME.lock().await;
    let nats = NatsCluster::start(&data_dir(&format!("{name}-nats")), 3).await;
    let mut nodes = Vec::new();
    for id in ["a", "b", "c"] {
        let args = [
            "--cluster",
            &nats.urls(),
            "--node-id",
            id,
            "--cluster-replicas",
            "3",
            "--no-recorder",
            "--sys-interval",
            "1",
        ];
        let args: Vec<&str> = args.iter().chain(extra).copied().collect();
        let mut node = Cauldron::start(&data_dir(&format!("{name}-{id}")), &args).await;
        node.logged("joined the cluster").await;
        nodes.push(node);
    }
    warm_up(&mut nodes).await;
    Nodes { nats, nodes, _turn: turn }
}

/// Until a QoS 0 and a QoS 1 message from node a reach subscribers on b and c: NATS spreads a
/// new subscription's interest between its servers a moment after it is made, and JetStream
/// elects the stream's leader when the stream is first made; a test starts after both.
pub async fn warm_up(nodes: &mut [Cauldron]) {
    let deadline = tokio::time::Instant::now() + WAIT * 3;
    let mut listeners = Vec::new();
    for (i, node) in nodes.iter().enumerate().skip(1) {
        let (sub, messages) = client(node, &format!("warm-up-{i}")).await;
        sub.subscribe("warm-up/#", QoS::AtLeastOnce).await.unwrap();
        listeners.push((sub, messages));
    }
    for qos in [QoS::AtMostOnce, QoS::AtLeastOnce] {
        'probe: loop {
            if tokio::time::Instant::now() > deadline {
                let logs: Vec<Vec<String>> = nodes.iter_mut().map(Cauldron::drain_log).collect();
                panic!("the cluster does not carry {qos:?} messages; the nodes logged {logs:#?}");
            }
            // A fresh publisher each time: one whose message JetStream refused is disconnected.
            let (publisher, _) = client(&nodes[0], "warm-up-pub").await;
            let sent =
                tokio::time::timeout(WAIT, publisher.publish("warm-up/probe", "probe", qos, false)).await;
            if !matches!(sent, Ok(Ok(()))) {
                continue;
            }
            for (_, messages) in &mut listeners {
                if tokio::time::timeout(Duration::from_secs(1), messages.recv()).await.is_err() {
                    continue 'probe;
                }
            }
            break;
        }
        // Probes that arrived late are not the test's messages.
        for (_, messages) in &mut listeners {
            while tokio::time::timeout(Duration::from_millis(300), messages.recv()).await.is_ok() {}
        }
    }
}

pub async fn client(node: &Cauldron, id: &str) -> (Client, Messages) {
    Client::connect(Options::new(node.addr.as_str(), id).protocol(Protocol::V5)).await.unwrap()
}
