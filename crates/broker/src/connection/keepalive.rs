//! Keep-alive deadlines of every connection, swept by one task. A connection keeps its
//! deadline and one entry here, not a timer of its own: a tokio `Sleep` is about 128 bytes on
//! the heap, in every one of a broker's many idle connections.
//!
//! An entry is due at the tick its deadline falls in; the sweep rings the connection's
//! doorbell (`Doorbell::KEEP_ALIVE`), and the connection compares its deadline, which every
//! packet moves: still ahead, it files itself again for that; passed, it closes
//! [MQTT-3.1.2-24]. So a packet costs no update here.
//!
//! A second wheel of the same kind rings connections a second after they went idle, so that
//! they park (`Doorbell::QUIET`, `parking`).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::time::Instant;

use crate::session::Doorbell;

/// How finely deadlines are told apart: a connection closes at most this late.
const TICK: Duration = Duration::from_millis(100);

/// Connections by the tick their keep alive runs out in.
pub(crate) struct KeepAlives {
    /// The instant tick 0 began.
    origin: Instant,
    due: Mutex<BTreeMap<u64, Vec<Weak<Doorbell>>>>,
    /// Whether the sweeping task runs (it starts with the first entry, on the runtime).
    sweeping: std::sync::atomic::AtomicBool,
    /// The doorbell reason it rings with.
    reason: u8,
}

impl KeepAlives {
    /// A wheel that rings its doorbells with `reason`.
    pub(crate) fn ringing(reason: u8) -> KeepAlives {
        KeepAlives { origin: Instant::now(), due: Mutex::default(), sweeping: Default::default(), reason }
    }

    /// Rings `doorbell` once `deadline` has passed (within a tick).
    pub(crate) fn file(self: &Arc<Self>, deadline: Instant, doorbell: &Arc<Doorbell>) {
        // Rounded up: never rung before the deadline.
        let tick =
            deadline.saturating_duration_since(self.origin).as_nanos().div_ceil(TICK.as_nanos()) as u64;
        self.due
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(tick)
            .or_default()
            .push(Arc::downgrade(doorbell));
        if !self.sweeping.swap(true, std::sync::atomic::Ordering::AcqRel) {
            tokio::spawn(Arc::clone(self).sweep());
        }
    }

    /// Rings what is due, every tick, while anyone else holds the wheel.
    async fn sweep(self: Arc<Self>) {
        let mut ticks = tokio::time::interval(TICK);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        while Arc::strong_count(&self) > 1 {
            ticks.tick().await;
            let now = (Instant::now() - self.origin).as_nanos() / TICK.as_nanos();
            let due = {
                let mut slots = self.due.lock().unwrap_or_else(|e| e.into_inner());
                let later = slots.split_off(&(now as u64 + 1));
                std::mem::replace(&mut *slots, later)
            };
            for doorbell in due.into_values().flatten() {
                if let Some(doorbell) = doorbell.upgrade() {
                    doorbell.ring(self.reason);
                }
            }
        }
        self.sweeping.store(false, std::sync::atomic::Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_doorbell_is_rung_once_its_deadline_has_passed() {
        let wheel = Arc::new(KeepAlives::ringing(Doorbell::KEEP_ALIVE));
        let (soon, later) = (Arc::new(Doorbell::default()), Arc::new(Doorbell::default()));
        let start = Instant::now();
        wheel.file(start + Duration::from_millis(250), &soon);
        wheel.file(start + Duration::from_secs(5), &later);
        let waker = futures_util::task::noop_waker();
        let cx = std::task::Context::from_waker(&waker);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(soon.take(&cx), 0, "not before its deadline");
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(soon.take(&cx), Doorbell::KEEP_ALIVE);
        assert_eq!(later.take(&cx), 0);
        drop(later);
        tokio::time::sleep(Duration::from_secs(5)).await; // a closed connection is skipped
    }
}
