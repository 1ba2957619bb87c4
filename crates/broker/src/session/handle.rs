//! `SessionHandle`: a session shared between publishers (through the router) and the connection
//! task that serves it, plus what belongs to the client rather than to the protocol state.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::task::Context;

use cauldron_proto::ByteString;
use futures_util::task::AtomicWaker;
use tokio::sync::Notify;

use super::{Delivery, Enqueued, Limits, Session, Terms};
use crate::authz::{Authorizer, ClientInfo};
use crate::message::Message;
use crate::store::{Persistence, Ticket};

static CONNECTION_IDS: AtomicU64 = AtomicU64::new(1);

/// A fresh id for a connection attaching to a session.
pub(crate) fn next_connection_id() -> u64 {
    CONNECTION_IDS.fetch_add(1, Ordering::Relaxed)
}

/// How others wake one connection task: publishers when they queue a message for it, the
/// broker when it takes the session over or shuts down. One waker and a set of reasons, so an
/// idle task keeps no future per reason (a `Notified` or a cancellation future is about 80
/// bytes each, in every one of a broker's many idle connections).
#[derive(Default)]
pub struct Doorbell {
    rung: AtomicU8,
    waker: AtomicWaker,
}

impl Doorbell {
    /// Messages were queued for the session.
    pub const MESSAGES: u8 = 1;
    /// Another connection took the session over, or the operator redirects clients.
    pub const KICK: u8 = 2;
    /// The broker is shutting down.
    pub const SHUTDOWN: u8 = 4;
    /// A new connection for the client id waits to take the session over: handle what the
    /// client already sent, then read no more (see `SessionHandle::settle_connection`).
    pub const SETTLE: u8 = 8;
    /// The connection's keep-alive deadline may have passed (`connection::KeepAlives`).
    pub const KEEP_ALIVE: u8 = 16;
    /// The connection went idle a second ago: if it still is, it parks (`connection::parking`).
    pub const QUIET: u8 = 32;

    /// Adds `reason` and wakes the task, unless that reason is already waiting for it: then
    /// a wake-up is already on its way.
    pub fn ring(&self, reason: u8) {
        if self.rung.fetch_or(reason, Ordering::AcqRel) & reason == 0 {
            self.waker.wake();
        }
    }

    /// Every reason rung since the last call. Registers the task first, so a ring that comes
    /// after the take wakes it again.
    pub fn take(&self, cx: &Context<'_>) -> u8 {
        self.waker.register(cx.waker());
        self.rung.swap(0, Ordering::AcqRel)
    }

    /// Hands the doorbell to `waker` (a parked connection's) and tells whether a reason is
    /// already waiting, which the caller must act on: it rang before this waker was here.
    pub(crate) fn hand_to(&self, waker: &std::task::Waker) -> bool {
        self.waker.register(waker);
        self.rung.load(Ordering::Acquire) != 0
    }
}

/// What others wait for on a session.
#[derive(Default)]
struct Waits {
    /// Woken when a queue that went past its limit is back within it: publishers paused on
    /// this subscriber go on.
    room: Notify,
    /// Woken when the attached connection has settled or closed (`settle_connection`).
    settled: Notify,
}

/// Who the latest connection is, for authorization of deliveries: its user name, and the
/// authorizer of the listener it came through when that has its own.
#[derive(Default)]
struct Owner {
    username: Option<ByteString>,
    authorizer: Option<Arc<dyn Authorizer>>,
}

/// A session shared between the router (publishers) and its connection task.
pub struct SessionHandle {
    pub client_id: ByteString,
    state: Mutex<Session>,
    /// Made for the first waiter: most sessions never have one.
    waits: OnceLock<Box<Waits>>,
    /// The attached connection and its doorbell: rung when a message is queued, and to close
    /// the connection (takeover, shutdown).
    doorbell: Mutex<Option<(u64, Arc<Doorbell>)>>,
    /// A connection another cluster node took over, which must deliver nothing more.
    fence: crate::broker::Fence,
    /// Mirrors whether a connection is attached, for the router to read without the lock.
    online: AtomicBool,
    /// Who the latest connection is (one lock: they change together, at CONNECT).
    owner: Mutex<Owner>,
    /// Where the session's journal goes, when the broker keeps a store.
    journal: Option<Arc<Persistence>>,
}

impl SessionHandle {
    /// `journal`: the broker's store, to which the session journals its changes when
    /// persistent. `memory`: the broker-wide count of queued payload bytes.
    pub fn new(
        client_id: ByteString,
        limits: impl Into<Arc<Limits>>,
        journal: Option<Arc<Persistence>>,
        memory: Arc<super::QueuedBytes>,
    ) -> Arc<SessionHandle> {
        Arc::new(SessionHandle {
            state: Mutex::new(Session::new(client_id.clone(), limits, journal.is_some(), memory)),
            journal,
            client_id,
            waits: OnceLock::new(),
            doorbell: Mutex::new(None),
            fence: Default::default(),
            online: AtomicBool::new(false),
            owner: Mutex::default(),
        })
    }

    #[cfg(test)]
    pub fn new_for_test(client_id: &str) -> Arc<SessionHandle> {
        let limits = Limits {
            max_inflight: 20,
            max_queued: 1000,
            max_queued_bytes: 0,
            queue_qos0: false,
            drop_oldest: false,
            memory_ceiling: 0,
        };
        SessionHandle::new(client_id.into(), limits, None, Arc::default())
    }

    /// Locks the state. Never held across an `.await`; a poisoned lock (a panic elsewhere while
    /// holding it) still yields the state, which every method leaves consistent. Private: the
    /// way in is `read` or `edit`, so no change can skip its journal.
    fn lock(&self) -> MutexGuard<'_, Session> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Looks at the state.
    pub fn read<R>(&self, look: impl FnOnce(&Session) -> R) -> R {
        look(&self.lock())
    }

    /// Changes the state under one lock and journals the change once: what it journalled is
    /// handed to the store before the lock is let go, so a session's operations reach the
    /// store in the order it made them. The ticket resolves once they are durable (none when
    /// nothing was journalled, or without a store, or with relaxed durability).
    pub fn edit<R>(&self, change: impl FnOnce(&mut Session) -> R) -> (R, Option<Ticket>) {
        let mut state = self.lock();
        let result = change(&mut state);
        let ticket = self.journal.as_ref().and_then(|journal| journal.submit(state.take_ops()));
        (result, ticket)
    }

    /// Offers a message (one of a fan-out) and wakes the connection if it was queued. What it
    /// journalled goes to the store at once, without a ticket of its own: the publisher waits
    /// for all of them with one (`Persistence::confirm`). Returns whether anything was
    /// journalled.
    pub fn deliver(&self, delivery: Delivery) -> (Enqueued, bool) {
        let (message, terms) = delivery.into_parts();
        let mut outcome = None;
        self.deliver_all(std::iter::once((&message, terms)), |o| outcome = Some(o));
        outcome.expect("one outcome per delivery")
    }

    /// `deliver` for several messages, in order, under one lock, with one submission to the
    /// store and at most one ring. `outcome` hears of each in turn: how it was queued and
    /// whether it was journalled.
    pub fn deliver_all<'m>(
        &self,
        deliveries: impl Iterator<Item = (&'m Arc<Message>, Terms)>,
        mut outcome: impl FnMut((Enqueued, bool)),
    ) {
        let ring = {
            let mut state = self.lock();
            let mut queued = false;
            for (message, terms) in deliveries {
                let journalled = state.ops_len();
                let result = state.offer(message, terms);
                queued |= matches!(result, Enqueued::Queued | Enqueued::Congested);
                outcome((result, state.ops_len() > journalled));
            }
            let ops = state.take_ops();
            if let Some(journal) = self.journal.as_ref().filter(|_| !ops.is_empty()) {
                journal.append(ops);
            }
            queued && state.ring_needed()
        };
        if ring {
            self.ring(Doorbell::MESSAGES);
        }
    }

    /// Rings the attached connection's doorbell, if one is attached.
    pub fn ring(&self, reason: u8) {
        let doorbell = self.doorbell.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, bell)) = &*doorbell {
            bell.ring(reason);
        }
    }

    /// Resolves once this session's queue is within its limits again.
    pub async fn has_room(&self) {
        loop {
            let notified = self.waits().room.notified();
            tokio::pin!(notified);
            // Registered before the check, so a drain in between is not missed.
            notified.as_mut().enable();
            if self.lock().has_room() {
                return;
            }
            notified.await;
        }
    }

    /// Tells paused publishers that the queue is back within its limits (after a drain for
    /// which `Session::take_room_freed` said so).
    pub fn notify_room(&self) {
        if let Some(waits) = self.waits.get() {
            waits.room.notify_waiters();
        }
    }

    fn waits(&self) -> &Waits {
        self.waits.get_or_init(Box::default)
    }

    /// Attaches `connection`'s doorbell, closing the connection attached before, if any.
    pub fn set_connection(&self, connection: u64, doorbell: Arc<Doorbell>) {
        let previous =
            self.doorbell.lock().unwrap_or_else(|e| e.into_inner()).replace((connection, doorbell));
        if let Some((_, old)) = previous {
            old.ring(Doorbell::KICK);
        }
    }

    /// Stops `connection` delivering and closes it, if it is the attached one (another node
    /// took its client over).
    pub fn fence_connection(&self, connection: u64) {
        let doorbell = self.doorbell.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((id, bell)) = doorbell.as_ref().filter(|(id, _)| *id == connection) {
            self.fence.close(*id);
            bell.ring(Doorbell::KICK);
        }
    }

    /// Stops `connection` delivering, leaving it open (and the session whole) for now: the
    /// session is being handed to another node, which closes it after.
    pub fn fence(&self, connection: u64) {
        let doorbell = self.doorbell.lock().unwrap_or_else(|e| e.into_inner());
        if doorbell.as_ref().is_some_and(|(id, _)| *id == connection) {
            self.fence.close(connection);
        }
    }

    /// Whether `connection` was fenced off by `fence_connection`.
    pub fn is_fenced(&self, connection: u64) -> bool {
        self.fence.holds(connection)
    }

    /// Closes the attached connection, if any.
    pub fn kick(&self) {
        if let Some((_, bell)) = self.doorbell.lock().unwrap_or_else(|e| e.into_inner()).take() {
            bell.ring(Doorbell::KICK);
        }
    }

    /// Lets the attached connection handle what its client sent before a new connection for
    /// the same client id arrived: a client that sends DISCONNECT with Session Expiry 0 and
    /// reconnects at once must find its session ended, though the two connections are served
    /// in parallel. Waits at most `bound` for that connection to settle or close.
    pub async fn settle_connection(&self, bound: std::time::Duration) {
        let settled = self.waits().settled.notified();
        tokio::pin!(settled);
        // Registered before ringing, so an answer that comes at once is not missed.
        settled.as_mut().enable();
        let bell = match &*self.doorbell.lock().unwrap_or_else(|e| e.into_inner()) {
            Some((_, bell)) => Arc::clone(bell),
            None => return,
        };
        bell.ring(Doorbell::SETTLE);
        let _ = tokio::time::timeout(bound, settled).await;
    }

    /// The attached connection has settled or closed.
    pub fn notify_settled(&self) {
        if let Some(waits) = self.waits.get() {
            waits.settled.notify_waiters();
        }
    }

    pub fn is_online(&self) -> bool {
        self.online.load(Ordering::Relaxed)
    }

    /// Who this session belongs to now.
    pub fn client_info(&self) -> ClientInfo {
        let username = self.owner().username.clone();
        ClientInfo { client_id: self.client_id.clone(), username }
    }

    /// The listener's own authorizer, if the session's connection came through one that has it.
    pub fn authorizer(&self) -> Option<Arc<dyn Authorizer>> {
        self.owner().authorizer.clone()
    }

    pub fn set_authorizer(&self, authorizer: Option<Arc<dyn Authorizer>>) {
        self.owner().authorizer = authorizer;
    }

    fn owner(&self) -> MutexGuard<'_, Owner> {
        self.owner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn set_username(&self, username: Option<ByteString>) {
        self.owner().username = username;
    }

    pub fn set_online(&self, online: bool) {
        self.online.store(online, Ordering::Relaxed);
    }

    /// Parks a delayed will; it is published by whoever takes it first: the delay timer, the
    /// end of the session, or nobody if the client reconnects in time.
    /// Forgets `connection`'s doorbell if it is still the attached one.
    pub fn clear_connection(&self, connection: u64) {
        let mut doorbell = self.doorbell.lock().unwrap_or_else(|e| e.into_inner());
        if doorbell.as_ref().is_some_and(|(id, _)| *id == connection) {
            *doorbell = None;
        }
    }
}
