//! One live connection per client id across the cluster, decided by compare-and-swap on the
//! JetStream key-value bucket `CAULDRON_SESSIONS`, never by a timer.
//!
//! A CONNECT writes `<connection> <node>` under the client id's key, expecting the revision it
//! read (JetStream refuses the write if anyone wrote since, and the node reads and tries again).
//! Every node watches the bucket; revisions are totally ordered, so a node holding a connection
//! whose claim has revision `r` closes it (DISCONNECT 0x8E) when it sees a later claim by anyone
//! else. The watch delivers a node's own claim before any claim made after it, which is how a
//! claim still waiting for its answer is told apart from one that replaced it.
//!
//! A node that was paused (SIGSTOP, a frozen VM) cannot know what was claimed meanwhile: its
//! clock task sees the gap, and its connections deliver nothing until the watch has shown it a
//! heartbeat the node wrote after waking, by which point every claim made during the pause has
//! been read and its connections closed. The same heartbeat key (`n.<node>`) tells the others
//! the node is alive.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, kv};
use cauldron_proto::ByteString;
use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{subject, ClusterError};
use crate::broker::{Broker, Claiming, Directory};

const BUCKET: &str = "CAULDRON_SESSIONS";
const CLIENT_KEY: &str = "c";
const NODE_KEY: &str = "n";
/// How often the clock task looks at the time.
const TICK: Duration = Duration::from_millis(250);
/// How often the node writes its heartbeat when nothing hurries it.
const HEARTBEAT: Duration = Duration::from_secs(2);
/// A gap in the clock task's ticks this long means the process was not running. Short, since
/// a pause shorter than this goes unnoticed; a busy machine taken for a paused one only costs a
/// heartbeat's round trip of held deliveries.
const PAUSED: Duration = Duration::from_secs(1);
/// Tries at a claim that others keep overtaking, before the client is refused.
const ATTEMPTS: usize = 8;

/// A connection of this node and the revision of its claim (0 until the watch shows it).
#[derive(Debug, Clone, Copy)]
struct Claim {
    connection: u64,
    revision: u64,
}

pub(super) struct Registry {
    bucket: kv::Store,
    node: Arc<str>,
    broker: Weak<Broker>,
    /// Client ids connected here, by key.
    claims: Mutex<HashMap<String, Claim>>,
    epoch: Instant,
    /// Milliseconds since `epoch` at the clock task's last tick.
    ticked: AtomicU64,
    /// Set after a pause, until the watch shows the heartbeat of revision `confirming` or later.
    stale: AtomicBool,
    confirming: AtomicU64,
    /// The latest revision of this node's heartbeat the watch has shown.
    heartbeat_seen: AtomicU64,
}

impl Registry {
    /// Opens (or makes) the bucket and starts watching it, the clock and the heartbeat.
    pub(super) async fn start(
        js: &jetstream::Context,
        broker: &Arc<Broker>,
        node: Arc<str>,
        replicas: usize,
        shutdown: CancellationToken,
    ) -> Result<Arc<Registry>, ClusterError> {
        let bucket = match js.get_key_value(BUCKET).await {
            Ok(bucket) => bucket,
            Err(_) => js
                .create_key_value(kv::Config {
                    bucket: BUCKET.into(),
                    history: 1,
                    num_replicas: replicas,
                    storage: jetstream::stream::StorageType::File,
                    ..Default::default()
                })
                .await
                .map_err(|e| ClusterError(format!("bucket {BUCKET}: {e}")))?,
        };
        let watch = bucket.watch_all().await.map_err(|e| ClusterError(format!("watching {BUCKET}: {e}")))?;
        let registry = Arc::new(Registry {
            bucket,
            node,
            broker: Arc::downgrade(broker),
            claims: Mutex::default(),
            epoch: Instant::now(),
            ticked: AtomicU64::new(0),
            stale: AtomicBool::new(false),
            confirming: AtomicU64::new(0),
            heartbeat_seen: AtomicU64::new(0),
        });
        let wake = Arc::new(tokio::sync::Notify::new());
        tokio::spawn(Arc::clone(&registry).follow(watch, shutdown.clone()));
        tokio::spawn(Arc::clone(&registry).keep_time(Arc::clone(&wake), shutdown.clone()));
        tokio::spawn(Arc::clone(&registry).beat(wake, shutdown));
        Ok(registry)
    }

    fn claims(&self) -> std::sync::MutexGuard<'_, HashMap<String, Claim>> {
        self.claims.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn now(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn heartbeat_key(&self) -> String {
        subject::encode(NODE_KEY, &self.node)
    }

    async fn try_claim(&self, key: &str, value: bytes::Bytes) -> Result<(), String> {
        for _ in 0..ATTEMPTS {
            let expected = match self.bucket.entry(key).await {
                Ok(entry) => entry.map_or(0, |e| e.revision),
                Err(e) => return Err(e.to_string()),
            };
            match self.bucket.update(key, value.clone(), expected).await {
                Ok(_) => return Ok(()),
                Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => continue,
                Err(e) => return Err(e.to_string()),
            }
        }
        Err("other nodes kept claiming the client id".into())
    }

    /// Applies the bucket's changes: claims that replace this node's connections close them,
    /// this node's heartbeats end a pause's doubt.
    async fn follow(self: Arc<Self>, mut watch: kv::Watch, shutdown: CancellationToken) {
        let own_heartbeat = self.heartbeat_key();
        loop {
            let entry = tokio::select! {
                entry = watch.next() => entry,
                _ = shutdown.cancelled() => return,
            };
            let entry = match entry {
                Some(Ok(entry)) => entry,
                Some(Err(e)) => {
                    warn!("cluster: following {BUCKET}: {e}");
                    continue;
                }
                None => return,
            };
            if entry.key == own_heartbeat {
                self.heartbeat_seen.fetch_max(entry.revision, Ordering::AcqRel);
                self.confirm();
                continue;
            }
            if entry.operation != kv::Operation::Put {
                continue;
            }
            let Some((connection, node)) = owner(&entry.value) else { continue };
            let replaced = {
                let mut claims = self.claims();
                match claims.get_mut(&entry.key) {
                    Some(claim) if node == &*self.node && connection == claim.connection => {
                        claim.revision = entry.revision;
                        None
                    }
                    // A claim still unseen is newer than anything the watch shows before it.
                    Some(claim) if claim.revision != 0 && entry.revision > claim.revision => {
                        claims.remove(&entry.key).map(|c| c.connection)
                    }
                    _ => None,
                }
            };
            if let (Some(connection), Some(broker)) = (replaced, self.broker.upgrade()) {
                if let Some(client_id) = subject::decode(CLIENT_KEY, &entry.key) {
                    info!("Client {client_id} connected to node {node}, closing its connection here.");
                    broker.taken_over_elsewhere(&ByteString::from(client_id), connection);
                }
            }
        }
    }

    /// Ends a pause's doubt once the watch has shown a heartbeat written after it.
    fn confirm(&self) {
        let confirming = self.confirming.load(Ordering::Acquire);
        if self.stale.load(Ordering::Acquire)
            && confirming != 0
            && self.heartbeat_seen.load(Ordering::Acquire) >= confirming
            && self.stale.swap(false, Ordering::AcqRel)
        {
            info!("cluster: caught up with the session registry; delivering again");
            if let Some(broker) = self.broker.upgrade() {
                broker.wake_connections();
            }
        }
    }

    /// Notices pauses. Never waits on NATS, so a slow server is not mistaken for a pause.
    async fn keep_time(self: Arc<Self>, wake: Arc<tokio::sync::Notify>, shutdown: CancellationToken) {
        let mut last = self.now();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(TICK) => {}
                _ = shutdown.cancelled() => return,
            }
            let now = self.now();
            let gap = now.saturating_sub(last);
            if gap >= PAUSED.as_millis() as u64 && !self.stale.swap(true, Ordering::AcqRel) {
                warn!(
                    paused_ms = gap,
                    "cluster: this node was not running; holding deliveries until it has read the session registry"
                );
                self.confirming.store(0, Ordering::Release);
                wake.notify_one();
            }
            last = now;
            self.ticked.store(now, Ordering::Release);
        }
    }

    /// Writes this node's heartbeat now and then, and at once after a pause: the one that ends
    /// the pause's doubt.
    async fn beat(self: Arc<Self>, wake: Arc<tokio::sync::Notify>, shutdown: CancellationToken) {
        let key = self.heartbeat_key();
        loop {
            let stale = self.stale.load(Ordering::Acquire);
            match self.bucket.put(&key, self.now().to_string().into()).await {
                Ok(revision) if stale => {
                    let _ =
                        self.confirming.compare_exchange(0, revision, Ordering::AcqRel, Ordering::Acquire);
                    self.confirm();
                }
                Ok(_) => {}
                Err(e) => warn!("cluster: heartbeat: {e}"),
            }
            tokio::select! {
                _ = tokio::time::sleep(HEARTBEAT) => {}
                _ = wake.notified() => {}
                _ = shutdown.cancelled() => return,
            }
        }
    }
}

/// The connection and node a claim names.
fn owner(value: &[u8]) -> Option<(u64, &str)> {
    let (connection, node) = std::str::from_utf8(value).ok()?.split_once(' ')?;
    Some((connection.parse().ok()?, node))
}

impl Directory for Registry {
    fn claim(self: Arc<Self>, client_id: ByteString, connection: u64) -> Claiming {
        let key = subject::encode(CLIENT_KEY, &client_id);
        // In the table before the write: the watch may show the claim before the write returns.
        self.claims().insert(key.clone(), Claim { connection, revision: 0 });
        let value: bytes::Bytes = format!("{connection} {}", self.node).into();
        let registry = self;
        Box::pin(async move {
            let claimed = registry.try_claim(&key, value).await;
            if claimed.is_err() {
                let mut claims = registry.claims();
                if claims.get(&key).is_some_and(|c| c.connection == connection) {
                    claims.remove(&key);
                }
            }
            claimed
        })
    }

    fn release(&self, client_id: &ByteString, connection: u64) {
        let key = subject::encode(CLIENT_KEY, client_id);
        let released = {
            let mut claims = self.claims();
            match claims.get(&key) {
                Some(claim) if claim.connection == connection => claims.remove(&key),
                _ => None,
            }
        };
        // Deleted only if nobody claimed it since; with the revision still unknown the key
        // stays, which costs nothing: the next claim replaces it.
        if let Some(claim) = released.filter(|c| c.revision != 0) {
            let bucket = self.bucket.clone();
            tokio::spawn(async move {
                let _ = bucket.delete_expect_revision(&key, Some(claim.revision)).await;
            });
        }
    }

    fn current(&self) -> bool {
        !self.stale.load(Ordering::Acquire)
            && self.now().saturating_sub(self.ticked.load(Ordering::Acquire)) < PAUSED.as_millis() as u64
    }
}
