//! What a dead node leaves: the connections it held stay claimed in the registry, their
//! sessions unparked, their wills unpublished. Every node watches the others' heartbeats; when
//! one falls silent, each live node goes through its entries, and whichever wins the
//! compare-and-swap on an entry parks that session from its last checkpoint (or, for one that
//! does not persist, deletes the entry) and publishes its will: once, however many nodes look.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::kv;
use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{Registry, CLIENT_KEY};
use crate::cluster::handoff::{Holder, Parting};
use crate::store::record;

/// A node whose heartbeat (every 2 s) has not been seen for this long is taken for dead.
const SILENT: Duration = Duration::from_secs(8);
/// How often the heartbeats seen are looked at.
const LOOK: Duration = Duration::from_secs(1);

impl Registry {
    /// Notes another node's heartbeat, seen by the watch.
    pub(super) fn heard(&self, node: String) {
        self.heard.lock().unwrap_or_else(|e| e.into_inner()).insert(node, Instant::now());
    }

    /// Takes over from nodes that fell silent.
    pub(super) async fn watch_nodes(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(LOOK) => {}
                _ = shutdown.cancelled() => return,
            }
            // Not while this node itself may have been asleep, nor before its own heartbeats
            // have been stored for `SILENT`: the silence may be its own, or JetStream's (no
            // quorum: nobody's heartbeat is stored, and nobody is dead for that).
            let beating = self.beating_since.load(Ordering::Acquire);
            let beating_for = Duration::from_millis(self.now().saturating_sub(beating));
            if !crate::broker::Directory::current(&*self) || beating == u64::MAX || beating_for < SILENT {
                continue;
            }
            let silent: Vec<String> = {
                let mut heard = self.heard.lock().unwrap_or_else(|e| e.into_inner());
                let silent: Vec<String> = heard
                    .iter()
                    .filter(|(_, at)| at.elapsed() >= SILENT)
                    .map(|(node, _)| node.clone())
                    .collect();
                for node in &silent {
                    heard.remove(node);
                }
                silent
            };
            for node in silent {
                tokio::spawn(Arc::clone(&self).reap(node));
            }
        }
    }

    /// Parks the sessions and publishes the wills of `node`'s live connections.
    async fn reap(self: Arc<Self>, node: String) {
        let mut keys = match self.bucket.keys().await {
            Ok(keys) => keys,
            Err(e) => return warn!("cluster: listing {node}'s sessions: {e}"),
        };
        let prefix = format!("{CLIENT_KEY}.");
        let mut reaped = 0;
        while let Some(key) = keys.next().await {
            let Ok(key) = key else { continue };
            if key.starts_with(&prefix) && self.reap_one(&node, &key).await {
                reaped += 1;
            }
        }
        if reaped > 0 {
            info!(
                node,
                reaped, "cluster: node {node} is silent; its clients' sessions parked, their wills published"
            );
        }
    }

    /// Whether this node took over `key` from `node`.
    async fn reap_one(self: &Arc<Self>, node: &str, key: &str) -> bool {
        let Ok(Some(entry)) = self.bucket.entry(key).await else { return false };
        if entry.operation != kv::Operation::Put {
            return false;
        }
        let Ok(holder) = record::from_bytes::<Holder>(&entry.value) else { return false };
        if holder.node != node || !holder.online {
            return false;
        }
        let will = holder.will.clone();
        let expiry = holder.session.as_ref().map_or(0, |s| s.record.expiry_interval);
        let taken = match holder.session {
            Some(mut parked) => {
                // Offline from now: its expiry runs from here.
                if expiry != u32::MAX {
                    let ms = record::wall_ms(Instant::now()) + u64::from(expiry) * 1000;
                    parked.record.expires_at_ms = Some(ms);
                }
                let left = Holder {
                    online: false,
                    resume: false,
                    handed_over: false,
                    will: None,
                    session: Some(parked),
                    ..holder
                };
                self.bucket.update(key, record::to_bytes(&left).into(), entry.revision).await.ok()
            }
            None => self.bucket.delete_expect_revision(key, Some(entry.revision)).await.ok().map(|()| 0),
        };
        let Some(revision) = taken else { return false };
        if let Some(will) = will {
            tokio::spawn(Arc::clone(self).publish_will(key.to_string(), revision, will));
        }
        true
    }

    /// Publishes a dead node's client's will, after its delay unless the client came back
    /// meanwhile [MQTT-3.1.3-9].
    async fn publish_will(self: Arc<Self>, key: String, revision: u64, will: Parting) {
        if will.delay > 0 {
            tokio::time::sleep(Duration::from_secs(u64::from(will.delay))).await;
            let unchanged = matches!(self.bucket.entry(&key).await, Ok(Some(e)) if e.revision == revision);
            if !unchanged {
                return;
            }
        }
        let (Ok(message), Some(broker)) = (will.message.restore(), self.broker.upgrade()) else { return };
        drop(broker.publish(message).durable);
    }
}
