//! The broker over a store that can be made to fail: an I/O error is reported, the message is
//! not acknowledged, and the broker keeps serving what needs no store.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use cauldron_broker::store::{Durability, Op, Snapshot, Store, StoreError};
use cauldron_broker::{AllowAll, Broker, CancellationToken, Config};
use cauldron_client::{Client, Options};
use cauldron_proto::QoS;
use common::*;

struct Flaky {
    failing: Arc<AtomicBool>,
    commits: Arc<std::sync::Mutex<Vec<Op>>>,
}

impl Store for Flaky {
    fn load(&mut self) -> Result<Snapshot, StoreError> {
        Ok(Snapshot::default())
    }
    fn commit(&mut self, ops: &[Op]) -> Result<(), StoreError> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(StoreError::Io("No space left on device".into()));
        }
        self.commits.lock().unwrap().extend_from_slice(ops);
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_store_means_no_ack_and_the_rest_keeps_working() {
    let failing = Arc::new(AtomicBool::new(false));
    let commits = Arc::new(std::sync::Mutex::new(Vec::new()));
    let store = Flaky { failing: Arc::clone(&failing), commits: Arc::clone(&commits) };
    let broker = Broker::open(
        Config::default(),
        Arc::new(AllowAll),
        Box::new(store),
        Snapshot::default(),
        Durability::Sync,
    )
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(cauldron_broker::run(Arc::clone(&broker), vec![listener], CancellationToken::new()));

    let (publisher, _) = Client::connect(Options::new(&addr, "pub")).await.unwrap();
    publisher.publish("kept", "1", QoS::AtLeastOnce, true).await.unwrap();
    assert!(commits.lock().unwrap().iter().any(|op| matches!(op, Op::PutRetained(t, _) if t == "kept")));

    failing.store(true, Ordering::SeqCst);
    let refused =
        tokio::time::timeout(WAIT, publisher.publish("kept", "2", QoS::AtLeastOnce, true)).await.unwrap();
    assert!(refused.is_err(), "no PUBACK for what could not be stored: {refused:?}");

    // Non-durable traffic is still served while the disk is full.
    let (sub, mut messages) = Client::connect(Options::new(&addr, "sub")).await.unwrap();
    sub.subscribe("live", QoS::AtMostOnce).await.unwrap();
    let (other, _) = Client::connect(Options::new(&addr, "other")).await.unwrap();
    other.publish("live", "still here", QoS::AtMostOnce, false).await.unwrap();
    assert_eq!(&next(&mut messages).await.payload[..], b"still here");

    // And once the disk has room again, durable publishing resumes.
    failing.store(false, Ordering::SeqCst);
    let (publisher, _) = Client::connect(Options::new(&addr, "pub")).await.unwrap();
    publisher.publish("kept", "3", QoS::AtLeastOnce, true).await.unwrap();
}
