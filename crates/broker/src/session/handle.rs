//! `SessionHandle`: a session shared between publishers (through the router) and the connection
//! task that serves it, plus what belongs to the client rather than to the protocol state.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use cauldron_proto::ByteString;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::{Delivery, Enqueued, Limits, Session};
use crate::authz::{Authorizer, ClientInfo};
use crate::store::Op;

static CONNECTION_IDS: AtomicU64 = AtomicU64::new(1);

/// A fresh id for a connection attaching to a session.
pub fn next_connection_id() -> u64 {
    CONNECTION_IDS.fetch_add(1, Ordering::Relaxed)
}

/// A session shared between the router (publishers) and its connection task.
pub struct SessionHandle {
    pub client_id: ByteString,
    state: Mutex<Session>,
    /// Woken whenever a message is queued, so the connection task drains it.
    pub wake: Notify,
    /// Woken when a queue that went past its limit is back within it: publishers paused on
    /// this subscriber go on.
    room: Notify,
    /// Cancelled to close the attached connection (takeover, shutdown).
    kick: Mutex<Option<(u64, CancellationToken)>>,
    /// Mirrors whether a connection is attached, for the router to read without the lock.
    online: AtomicBool,
    /// The user name of the latest connection, for authorization of deliveries.
    username: Mutex<Option<ByteString>>,
    /// The authorizer of the listener the latest connection came through, when it has its own.
    authorizer: Mutex<Option<Arc<dyn Authorizer>>>,
}

impl SessionHandle {
    /// `store`: the broker keeps a store, so the session journals its changes when persistent.
    /// `memory`: the broker-wide count of queued payload bytes.
    pub fn new(
        client_id: ByteString,
        limits: Limits,
        store: bool,
        memory: Arc<AtomicUsize>,
    ) -> Arc<SessionHandle> {
        Arc::new(SessionHandle {
            state: Mutex::new(Session::new(&client_id, limits, store, memory)),
            client_id,
            wake: Notify::new(),
            room: Notify::new(),
            kick: Mutex::new(None),
            online: AtomicBool::new(false),
            username: Mutex::new(None),
            authorizer: Mutex::new(None),
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
        SessionHandle::new(client_id.into(), limits, false, Arc::default())
    }

    /// Locks the state. Never held across an `.await`; a poisoned lock (a panic elsewhere while
    /// holding it) still yields the state, which every method leaves consistent.
    pub fn lock(&self) -> MutexGuard<'_, Session> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Offers a message and wakes the connection if it was queued. Store operations for it
    /// are appended to `ops`.
    pub fn deliver(&self, delivery: Delivery, ops: &mut Vec<Op>) -> Enqueued {
        let result = {
            let mut state = self.lock();
            let result = state.enqueue(delivery);
            ops.append(&mut state.take_ops());
            result
        };
        if matches!(result, Enqueued::Queued | Enqueued::Congested) {
            self.wake.notify_one();
        }
        result
    }

    /// Resolves once this session's queue is within its limits again.
    pub async fn has_room(&self) {
        loop {
            let notified = self.room.notified();
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
        self.room.notify_waiters();
    }

    /// Registers `connection` as the one to cancel on takeover, cancelling the previous one.
    pub fn set_connection(&self, connection: u64, token: CancellationToken) {
        let previous = self.kick.lock().unwrap_or_else(|e| e.into_inner()).replace((connection, token));
        if let Some((_, old)) = previous {
            old.cancel();
        }
    }

    /// Cancels the attached connection, if any.
    pub fn kick(&self) {
        if let Some((_, token)) = self.kick.lock().unwrap_or_else(|e| e.into_inner()).take() {
            token.cancel();
        }
    }

    pub fn is_online(&self) -> bool {
        self.online.load(Ordering::Relaxed)
    }

    /// Who this session belongs to now.
    pub fn client_info(&self) -> ClientInfo {
        let username = self.username.lock().unwrap_or_else(|e| e.into_inner()).clone();
        ClientInfo { client_id: self.client_id.clone(), username }
    }

    /// The listener's own authorizer, if the session's connection came through one that has it.
    pub fn authorizer(&self) -> Option<Arc<dyn Authorizer>> {
        self.authorizer.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn set_authorizer(&self, authorizer: Option<Arc<dyn Authorizer>>) {
        *self.authorizer.lock().unwrap_or_else(|e| e.into_inner()) = authorizer;
    }

    pub fn set_username(&self, username: Option<ByteString>) {
        *self.username.lock().unwrap_or_else(|e| e.into_inner()) = username;
    }

    pub fn set_online(&self, online: bool) {
        self.online.store(online, Ordering::Relaxed);
    }

    /// Parks a delayed will; it is published by whoever takes it first: the delay timer, the
    /// end of the session, or nobody if the client reconnects in time.
    /// Forgets `connection`'s cancel token if it is still the registered one.
    pub fn clear_connection(&self, connection: u64) {
        let mut kick = self.kick.lock().unwrap_or_else(|e| e.into_inner());
        if kick.as_ref().is_some_and(|(id, _)| *id == connection) {
            *kick = None;
        }
    }
}
