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
//!
//! The sweep sleeps until the earliest tick that has an entry, and is woken when an entry is
//! filed for an earlier one: a broker with few clients is not woken ten times a second.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::session::Doorbell;

/// How finely deadlines are told apart: a connection closes at most this late.
const TICK: Duration = Duration::from_millis(100);

/// Longest the sweep sleeps with nothing filed before it looks whether the broker is gone.
const IDLE_LOOK: Duration = Duration::from_secs(60);

/// Connections by the tick their keep alive runs out in.
pub(crate) struct KeepAlives {
    /// The instant tick 0 began.
    origin: Instant,
    due: Mutex<BTreeMap<u64, Vec<Weak<Doorbell>>>>,
    /// Whether the sweeping task runs (it starts with the first entry, on the runtime).
    sweeping: std::sync::atomic::AtomicBool,
    /// Told when an entry is filed before every other: the sweep sleeps until then instead.
    earlier: Notify,
    /// The doorbell reason it rings with.
    reason: u8,
}

impl KeepAlives {
    /// A wheel that rings its doorbells with `reason`.
    pub(crate) fn ringing(reason: u8) -> KeepAlives {
        KeepAlives {
            origin: Instant::now(),
            due: Mutex::default(),
            sweeping: Default::default(),
            earlier: Notify::new(),
            reason,
        }
    }

    /// Rings `doorbell` once `deadline` has passed (within a tick).
    pub(crate) fn file(self: &Arc<Self>, deadline: Instant, doorbell: &Arc<Doorbell>) {
        // Rounded up: never rung before the deadline.
        let tick =
            deadline.saturating_duration_since(self.origin).as_nanos().div_ceil(TICK.as_nanos()) as u64;
        let first = {
            let mut due = self.due.lock().unwrap_or_else(|e| e.into_inner());
            let before = due.first_key_value().map(|(first, _)| *first);
            due.entry(tick).or_default().push(Arc::downgrade(doorbell));
            before.is_none_or(|before| tick < before)
        };
        if !self.sweeping.swap(true, std::sync::atomic::Ordering::AcqRel) {
            tokio::spawn(Arc::clone(self).sweep());
        } else if first {
            // A permit is kept if the sweep is not waiting yet, so this is never lost.
            self.earlier.notify_one();
        }
    }

    /// Rings what is due, tick by tick, while anyone else holds the wheel; sleeps until the
    /// earliest tick with an entry, or until one is filed before it.
    async fn sweep(self: Arc<Self>) {
        while Arc::strong_count(&self) > 1 {
            let earlier = self.earlier.notified();
            tokio::pin!(earlier);
            // Registered before the look, so an entry filed after it wakes the sleep.
            earlier.as_mut().enable();
            let first = self.due.lock().unwrap_or_else(|e| e.into_inner()).first_key_value().map(|(t, _)| *t);
            let wake = match first {
                Some(tick) => self.origin + TICK * u32::try_from(tick).unwrap_or(u32::MAX),
                None => Instant::now() + IDLE_LOOK,
            };
            tokio::select! {
                () = tokio::time::sleep_until(wake) => {}
                () = earlier => continue,
            }
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

    /// What has rung `doorbell` since it was last looked at.
    fn rung(doorbell: &Doorbell) -> u8 {
        let waker = futures_util::task::noop_waker();
        doorbell.take(&std::task::Context::from_waker(&waker))
    }

    #[tokio::test(start_paused = true)]
    async fn a_doorbell_is_rung_once_its_deadline_has_passed() {
        let wheel = Arc::new(KeepAlives::ringing(Doorbell::KEEP_ALIVE));
        let (soon, later) = (Arc::new(Doorbell::default()), Arc::new(Doorbell::default()));
        let start = Instant::now();
        wheel.file(start + Duration::from_millis(250), &soon);
        wheel.file(start + Duration::from_secs(5), &later);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(rung(&soon), 0, "not before its deadline");
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(rung(&soon), Doorbell::KEEP_ALIVE);
        assert_eq!(rung(&later), 0);
        drop(later);
        tokio::time::sleep(Duration::from_secs(5)).await; // a closed connection is skipped
    }

    #[tokio::test(start_paused = true)]
    async fn an_earlier_deadline_wakes_a_sweep_sleeping_until_a_later_one() {
        let wheel = Arc::new(KeepAlives::ringing(Doorbell::KEEP_ALIVE));
        let (later, sooner) = (Arc::new(Doorbell::default()), Arc::new(Doorbell::default()));
        let start = Instant::now();
        wheel.file(start + Duration::from_secs(60), &later);
        tokio::time::sleep(Duration::from_millis(10)).await; // the sweep sleeps until then
        wheel.file(start + Duration::from_millis(500), &sooner);
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert_eq!(rung(&sooner), Doorbell::KEEP_ALIVE, "rung within a tick of its deadline");
        assert_eq!(rung(&later), 0);
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(rung(&later), Doorbell::KEEP_ALIVE);
    }
}
