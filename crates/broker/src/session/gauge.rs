//! `QueuedBytes`: the payload bytes queued in all sessions of a broker, for its memory ceiling.
//!
//! Every delivery changes it twice (queued by the publisher, sent by the subscriber), usually on
//! two cores. One shared atomic made that a cache line bouncing between them on every message of
//! a fan-out; here each thread adds to a counter of its own and the reader sums them.

use std::sync::atomic::{AtomicIsize, Ordering};

use crate::metrics::{stripe, STRIPES};

/// A counter on a cache line of its own (128 bytes: adjacent-line prefetching pairs lines).
#[derive(Default)]
#[repr(align(128))]
struct Stripe(AtomicIsize);

/// The broker-wide count of queued payload bytes. A stripe may go negative (bytes queued on one
/// thread, sent from another); their sum does not.
#[derive(Default)]
pub struct QueuedBytes {
    stripes: [Stripe; STRIPES],
}

impl QueuedBytes {
    pub fn add(&self, bytes: usize) {
        self.stripe().fetch_add(bytes as isize, Ordering::Relaxed);
    }

    pub fn sub(&self, bytes: usize) {
        self.stripe().fetch_sub(bytes as isize, Ordering::Relaxed);
    }

    /// The total now: exact once the threads that changed it are done; a reader racing them
    /// sees a value between the totals before and after.
    pub fn total(&self) -> usize {
        let sum: isize = self.stripes.iter().map(|s| s.0.load(Ordering::Relaxed)).sum();
        sum.max(0) as usize
    }

    fn stripe(&self) -> &AtomicIsize {
        &self.stripes[stripe()].0
    }
}

impl std::fmt::Debug for QueuedBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("QueuedBytes").field(&self.total()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn bytes_queued_on_one_thread_and_sent_from_another_sum_to_what_is_left() {
        let gauge = Arc::new(QueuedBytes::default());
        gauge.add(100);
        let other = Arc::clone(&gauge);
        std::thread::spawn(move || other.sub(60)).join().unwrap();
        assert_eq!(gauge.total(), 40);
    }
}
