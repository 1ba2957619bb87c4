//! A node's doubt about its own view: the clock task that notices the process was paused, and
//! the heartbeat whose return through the watch ends the doubt (see the module above).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{Registry, HEARTBEAT, PAUSED, TICK};

impl Registry {
    /// Ends a pause's doubt once the watch has shown a heartbeat written after it.
    pub(super) fn confirm(&self) {
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
    pub(super) async fn keep_time(
        self: Arc<Self>,
        wake: Arc<tokio::sync::Notify>,
        shutdown: CancellationToken,
    ) {
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
    pub(super) async fn beat(self: Arc<Self>, wake: Arc<tokio::sync::Notify>, shutdown: CancellationToken) {
        let key = self.heartbeat_key();
        loop {
            let stale = self.stale.load(Ordering::Acquire);
            let beat = self.bucket.put(&key, self.now().to_string().into()).await;
            if beat.is_ok() {
                // After a failure (no quorum, say), everyone's silence counts from now.
                let now = self.now();
                let _ =
                    self.beating_since.compare_exchange(u64::MAX, now, Ordering::AcqRel, Ordering::Acquire);
            } else {
                self.beating_since.store(u64::MAX, Ordering::Release);
            }
            match beat {
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
