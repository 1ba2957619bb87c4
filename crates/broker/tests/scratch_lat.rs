mod common;
use cauldron_broker::store::{Durability, RedbStore};
use cauldron_broker::{AllowAll, Broker, CancellationToken, Config};
use cauldron_client::{Client, Options};
use cauldron_proto::QoS;
use std::sync::Arc;
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency() {
    let path = std::env::temp_dir().join("scratch-lat.redb");
    let _ = std::fs::remove_file(&path);
    let (store, snap, _) = RedbStore::open(&path).unwrap();
    let broker = Broker::open(
        Config::default(),
        Arc::new(AllowAll),
        Box::new(store),
        snap,
        Durability::Sync,
    )
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(cauldron_broker::run(
        Arc::clone(&broker),
        vec![listener],
        CancellationToken::new(),
    ));
    let (sub, _) = Client::connect(Options::new(&addr, "s").clean_start(false))
        .await
        .unwrap();
    sub.subscribe("t", QoS::AtLeastOnce).await.unwrap();
    sub.disconnect().await.unwrap();
    let (p, _) = Client::connect(Options::new(&addr, "p")).await.unwrap();
    let t = std::time::Instant::now();
    for _ in 0..500 {
        p.publish("t", "x", QoS::AtLeastOnce, false).await.unwrap();
    }
    eprintln!("per publish {:?}", t.elapsed() / 500);
}
