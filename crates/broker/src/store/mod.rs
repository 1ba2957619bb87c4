//! Durable broker state. `Store` is the seam (redb today); `Persistence` is the one writer: it
//! batches whatever operations arrived while the previous commit ran into the next one (group
//! commit: many messages, one fsync) and tells each submitter when its operations are durable.
//! Callers that promised durability (PUBACK, PUBREC, SUBACK) wait for that answer.

pub mod record;
mod redb;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use tracing::{error, info};

#[cfg(test)]
pub(crate) use self::redb::write_legacy_deliveries;
pub use self::redb::RedbStore;
pub use record::{Blob, DeliveryState, StoredDelivery, StoredMessage, StoredSession, StoredSubscription};

/// One change to durable state. Values are already serialized, so the writer only writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    PutRetained(String, Vec<u8>),
    DeleteRetained(String),
    PutSession(String, Vec<u8>),
    /// Removes the session with its QoS 2 receive state (its deliveries are deleted one by
    /// one, by the session that knows them).
    DeleteSession(String),
    /// Puts a session's delivery `seq` (a `StoredDelivery`) of `message`. The message is written
    /// with its first delivery and deleted with its last, so a fan-out to many persistent
    /// sessions writes it once and a state change rewrites only `record`.
    PutDelivery {
        client: String,
        seq: u64,
        message: Arc<Blob>,
        record: Vec<u8>,
    },
    DeleteDelivery {
        client: String,
        seq: u64,
        message: u64,
    },
    /// Removes a delivery written in the shape before the messages table (once it is written
    /// again in the new one).
    DeleteLegacyDelivery(String, u64),
    PutInboundQos2(String, u16),
    DeleteInboundQos2(String, u16),
}

/// Everything a store holds, read once at start-up.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub retained: Vec<(String, Vec<u8>)>,
    pub sessions: Vec<(String, Vec<u8>)>,
    /// The messages table: id, `StoredMessage`.
    pub messages: Vec<(u64, Vec<u8>)>,
    /// Client, seq, the message's id, `StoredDelivery`.
    pub deliveries: Vec<(String, u64, u64, Vec<u8>)>,
    /// Deliveries in the shape before the messages table (`record::LegacyDelivery`).
    pub legacy_deliveries: Vec<(String, u64, Vec<u8>)>,
    pub inbound_qos2: Vec<(String, u16)>,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("store I/O error: {0}")]
    Io(String),
    #[error("stored record is corrupt: {0}")]
    Corrupt(String),
    #[error("the store writer has stopped")]
    Stopped,
}

/// A place to keep broker state across restarts.
pub trait Store: Send + 'static {
    fn load(&mut self) -> Result<Snapshot, StoreError>;
    /// After a failed commit: make the next commit possible again, if the store needs that.
    fn reopen(&mut self) -> Result<(), StoreError> {
        Ok(())
    }
    /// Applies all `ops` atomically and durably (or not at all).
    fn commit(&mut self, ops: &[Op]) -> Result<(), StoreError>;
}

/// How commits are made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Acknowledge only what is committed (the default).
    Sync,
    /// Acknowledge at once and commit at most every `interval`: a crash can lose what was
    /// acknowledged in the last interval, in exchange for throughput.
    Relaxed { interval: Duration },
}

/// Resolves when the operations it was issued for are durable.
pub type Ticket = oneshot::Receiver<Result<(), StoreError>>;

struct Request {
    ops: Vec<Op>,
    done: Option<oneshot::Sender<Result<(), StoreError>>>,
    /// A confirmation (`Persistence::confirm`): it fails if any commit failed since the
    /// writer's count of failures stood at this.
    since: Option<u64>,
    /// The last request: commit, then stop.
    stop: bool,
}

/// The handle to the store writer thread.
pub struct Persistence {
    tx: std_mpsc::Sender<Request>,
    writer: std::sync::Mutex<Option<JoinHandle<()>>>,
    durability: Durability,
    /// False from a failed commit until one succeeds again (`/readyz` says not ready).
    healthy: Arc<AtomicBool>,
    /// How many commits have failed.
    failures: Arc<AtomicU64>,
}

/// How often a store that failed is tried again while nothing else is written.
const RETRY_INTERVAL: Duration = Duration::from_secs(1);

/// Most operations one commit takes, so one huge burst does not hold everyone's acks.
const MAX_BATCH_OPS: usize = 10_000;

impl Persistence {
    /// Starts the writer thread over `store`; `observe` hears of each commit's duration and
    /// number of operations (for metrics).
    pub fn start(store: Box<dyn Store>, durability: Durability, observe: CommitObserver) -> Persistence {
        let (tx, rx) = std_mpsc::channel();
        let healthy = Arc::new(AtomicBool::new(true));
        let failures = Arc::new(AtomicU64::new(0));
        let health = Health { healthy: Arc::clone(&healthy), failures: Arc::clone(&failures) };
        let writer = std::thread::Builder::new()
            .name("cauldron-store".into())
            .spawn(move || write_loop(store, rx, durability, observe, health))
            .expect("spawning the store writer thread");
        Persistence { tx, writer: std::sync::Mutex::new(Some(writer)), durability, healthy, failures }
    }

    /// Whether the last commit succeeded: false while the store cannot write (a full disk),
    /// true again once a commit (or a retry the writer makes by itself) goes through.
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Queues `ops` for the next commit. Returns a ticket to wait on unless there is nothing to
    /// wait for (no ops, or relaxed durability).
    pub fn submit(&self, ops: Vec<Op>) -> Option<Ticket> {
        if ops.is_empty() {
            return None;
        }
        let (done, ticket) = match self.durability {
            Durability::Sync => {
                let (tx, rx) = oneshot::channel();
                (Some(tx), Some(rx))
            }
            Durability::Relaxed { .. } => (None, None),
        };
        // The channel is unbounded, but each connection waits on its tickets, so what is
        // outstanding is bounded by connections times one read's worth of packets. After a
        // stop, the send fails and the dropped `done` reads as `Stopped` to the waiter.
        let _ = self.tx.send(Request { ops, done, since: None, stop: false });
        ticket
    }

    /// Queues `ops` for the next commit, with nobody waiting on them alone: the caller makes
    /// several such requests (one per session of a fan-out) and waits on a `confirm` after
    /// them, having taken `failures` first.
    pub fn append(&self, ops: Vec<Op>) {
        let _ = self.tx.send(Request { ops, done: None, since: None, stop: false });
    }

    /// Where the count of failed commits stands: taken before a series of `append`s.
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Acquire)
    }

    /// A ticket for everything appended before it: it resolves once that is committed, as an
    /// error if any commit failed after the count stood at `since` (so possibly one of them).
    pub fn confirm(&self, since: u64) -> Option<Ticket> {
        if let Durability::Relaxed { .. } = self.durability {
            return None;
        }
        let (done, ticket) = oneshot::channel();
        let _ = self.tx.send(Request { ops: Vec::new(), done: Some(done), since: Some(since), stop: false });
        Some(ticket)
    }

    /// Commits `ops` and waits for it, blocking the thread: for start-up only, before anyone
    /// is served.
    pub fn commit_before_start(&self, ops: Vec<Op>) -> Result<(), StoreError> {
        if ops.is_empty() {
            return Ok(());
        }
        let (done, mut ticket) = oneshot::channel();
        let request = Request { ops, done: Some(done), since: None, stop: false };
        self.tx.send(request).map_err(|_| StoreError::Stopped)?;
        loop {
            // `blocking_recv` may not be called on a runtime thread, which start-up may be.
            match ticket.try_recv() {
                Ok(result) => return result,
                Err(oneshot::error::TryRecvError::Empty) => std::thread::sleep(Duration::from_millis(1)),
                Err(oneshot::error::TryRecvError::Closed) => return Err(StoreError::Stopped),
            }
        }
    }

    /// Commits what is pending and stops the writer; later submissions are not stored.
    pub fn shutdown(&self) {
        let _ = self.tx.send(Request { ops: Vec::new(), done: None, since: None, stop: true });
        let writer = self.writer.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(writer) = writer {
            let _ = writer.join();
        }
    }
}

impl Drop for Persistence {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// What the writer tells the rest of the broker about how its commits go.
struct Health {
    healthy: Arc<AtomicBool>,
    failures: Arc<AtomicU64>,
}

/// Told the duration and operation count of every commit.
pub type CommitObserver = Box<dyn Fn(Duration, usize) + Send>;

fn write_loop(
    mut store: Box<dyn Store>,
    rx: std_mpsc::Receiver<Request>,
    durability: Durability,
    observe: CommitObserver,
    health: Health,
) {
    let Health { healthy, failures } = health;
    loop {
        // A failed store is retried by itself every interval, so it reports ready again as
        // soon as it can write, whether or not anyone is publishing.
        let first = match healthy.load(Ordering::Relaxed) {
            true => match rx.recv() {
                Ok(request) => request,
                Err(_) => return,
            },
            false => match rx.recv_timeout(RETRY_INTERVAL) {
                Ok(request) => request,
                Err(std_mpsc::RecvTimeoutError::Timeout) => {
                    let recovered = store.reopen().and_then(|()| store.commit(&[]));
                    if recovered.is_ok() {
                        info!("store writable again");
                        healthy.store(true, Ordering::Relaxed);
                    }
                    continue;
                }
                Err(std_mpsc::RecvTimeoutError::Disconnected) => return,
            },
        };
        let mut batch = vec![first];
        if let Durability::Relaxed { interval } = durability {
            // Let a whole interval's worth of work gather before paying for a commit; a stop
            // request ends the wait.
            let deadline = Instant::now() + interval;
            while !batch.last().is_some_and(|r| r.stop) {
                match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                    Ok(request) => batch.push(request),
                    Err(_) => break,
                }
            }
        }
        let mut op_count = batch.iter().map(|r| r.ops.len()).sum::<usize>();
        while op_count < MAX_BATCH_OPS {
            match rx.try_recv() {
                Ok(request) => {
                    op_count += request.ops.len();
                    batch.push(request);
                }
                Err(_) => break,
            }
        }
        let stop = batch.iter().any(|r| r.stop);
        let ops: Vec<Op> = batch.iter_mut().flat_map(|r| std::mem::take(&mut r.ops)).collect();
        let started = Instant::now();
        let result = if ops.is_empty() { Ok(()) } else { store.commit(&ops) };
        if !ops.is_empty() {
            observe(started.elapsed(), ops.len());
        }
        match &result {
            Err(e) => {
                error!(error = %e, ops = ops.len(), "store commit failed; those messages are not acknowledged");
                healthy.store(false, Ordering::Relaxed);
                failures.fetch_add(1, Ordering::AcqRel);
                if let Err(e) = store.reopen() {
                    error!(error = %e, "store could not be reopened; retrying");
                }
            }
            Ok(()) => {
                if !ops.is_empty() && !healthy.swap(true, Ordering::Relaxed) {
                    info!("store writable again");
                }
            }
        }
        let failed_by_now = failures.load(Ordering::Acquire);
        for request in batch {
            let result = match request.since {
                Some(since) if failed_by_now > since => {
                    Err(StoreError::Io("a commit this waited for failed".into()))
                }
                _ => result.clone(),
            };
            if let Some(done) = request.done {
                let _ = done.send(result);
            }
        }
        if stop {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Records commits, to see batching and ordering.
    struct Recorder(Arc<Mutex<Vec<Vec<Op>>>>);

    impl Store for Recorder {
        fn load(&mut self) -> Result<Snapshot, StoreError> {
            Ok(Snapshot::default())
        }
        fn commit(&mut self, ops: &[Op]) -> Result<(), StoreError> {
            std::thread::sleep(Duration::from_millis(20));
            self.0.lock().unwrap().push(ops.to_vec());
            Ok(())
        }
    }

    #[tokio::test]
    async fn requests_arriving_during_a_commit_share_the_next_one() {
        let commits = Arc::new(Mutex::new(Vec::new()));
        let persistence =
            Persistence::start(Box::new(Recorder(commits.clone())), Durability::Sync, Box::new(|_, _| {}));
        let first = persistence.submit(vec![Op::DeleteRetained("a".into())]).unwrap();
        std::thread::sleep(Duration::from_millis(5)); // the writer is now committing "a"
        let tickets: Vec<_> =
            (0..10).map(|i| persistence.submit(vec![Op::DeleteRetained(i.to_string())]).unwrap()).collect();
        first.await.unwrap().unwrap();
        for ticket in tickets {
            ticket.await.unwrap().unwrap();
        }
        persistence.shutdown();
        let commits = commits.lock().unwrap();
        assert_eq!(commits.len(), 2, "one commit for the first, one for the ten that waited");
        assert_eq!(commits[1].len(), 10);
        assert!(persistence.submit(vec![]).is_none());
    }

    /// Fails its first commit.
    struct FailsOnce(bool);

    impl Store for FailsOnce {
        fn load(&mut self) -> Result<Snapshot, StoreError> {
            Ok(Snapshot::default())
        }
        fn commit(&mut self, _: &[Op]) -> Result<(), StoreError> {
            match std::mem::replace(&mut self.0, false) {
                true => Err(StoreError::Io("disk full".into())),
                false => Ok(()),
            }
        }
    }

    /// A fan-out's journals go as separate requests with one confirmation after them: it fails
    /// when one of them failed, though its own (empty) commit did not.
    #[tokio::test]
    async fn a_confirmation_fails_if_what_it_follows_failed() {
        let persistence =
            Persistence::start(Box::new(FailsOnce(true)), Durability::Sync, Box::new(|_, _| {}));
        let since = persistence.failures();
        persistence.append(vec![Op::DeleteRetained("a".into())]);
        let failed = persistence.confirm(since).unwrap().await.unwrap();
        assert!(failed.is_err(), "the append before it failed");
        let since = persistence.failures();
        persistence.append(vec![Op::DeleteRetained("b".into())]);
        persistence.confirm(since).unwrap().await.unwrap().expect("all committed");
    }
}
