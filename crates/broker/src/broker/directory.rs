//! The seam through which a cluster keeps one live connection per client id across nodes.
//! A broker without one (every single node) decides takeovers alone, in `open_session`.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use cauldron_proto::ByteString;

use super::{lock, Broker};
use crate::message::Message;
use crate::session::{Doorbell, SessionHandle};
use crate::store::Ticket;

pub(crate) type Claiming = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

/// Who holds each client id, cluster-wide (the cluster's session registry).
pub trait Directory: Send + Sync {
    /// Makes `connection` the one live connection of `client_id`, wherever the last one was;
    /// the node holding that one closes it. With `resume`, a persistent session the client left
    /// on another node is adopted here first (and `open_session` then finds it). `Err` when the
    /// registry cannot be written: the client is refused rather than risk two live sessions.
    fn claim(self: Arc<Self>, client_id: ByteString, connection: u64, resume: bool) -> Claiming;
    /// `connection` ended here; `session` is what it leaves (parked in the registry if it
    /// persists).
    fn release(self: Arc<Self>, session: &Arc<SessionHandle>, connection: u64);
    /// Records a persistent session's subscriptions in the registry (SUBACK and UNSUBACK wait
    /// for the ticket); `None` for a session that does not persist.
    fn checkpoint(self: Arc<Self>, session: &Arc<SessionHandle>, connection: u64) -> Option<Ticket>;
    /// Leaves `connection`'s will (and its delay in seconds, within the session's expiry)
    /// with the registry, for another node to publish if this one dies with the connection
    /// open.
    fn keep_will(self: Arc<Self>, session: &Arc<SessionHandle>, connection: u64, will: Message, delay: u32);
    /// This node takes part in the shared group `filter` (`$share/<group>/<filter>`), which a
    /// member here just joined: SUBACK waits for the ticket.
    fn join_group(self: Arc<Self>, filter: &str) -> Option<Ticket>;
    /// This node's id.
    fn node(&self) -> &str;
    /// The nodes alive as this one sees them (itself included), sorted, for `$SYS`.
    fn nodes(&self) -> Vec<String>;
    /// Whether this node's view of the claims is current, so it may deliver: false after the
    /// process was paused (SIGSTOP, a frozen VM) until it has read what was claimed meanwhile.
    fn current(&self) -> bool;
}

impl Broker {
    /// Hands takeovers to a cluster's registry (once, when the node joins).
    pub fn set_directory(&self, directory: Arc<dyn Directory>) {
        let _ = self.directory.set(directory);
    }

    pub(crate) fn directory(&self) -> Option<&Arc<dyn Directory>> {
        self.directory.get()
    }

    /// Whether connections may send queued messages now (always, outside a cluster).
    pub(crate) fn may_deliver(&self) -> bool {
        self.directory.get().is_none_or(|d| d.current())
    }

    /// Closes `connection` of `client_id` (MQTT 5: DISCONNECT 0x8E) because another node has
    /// claimed the client id; from now on it delivers nothing more.
    pub fn taken_over_elsewhere(&self, client_id: &ByteString, connection: u64) {
        let session = lock!(self.sessions.lock()).get(client_id).cloned();
        if let Some(session) = session {
            session.fence_connection(connection);
        }
    }

    /// Wakes every connection, so that one held back while `Directory::current` was false
    /// sends what waits for it.
    pub fn wake_connections(&self) {
        let sessions: Vec<_> = lock!(self.sessions.lock()).values().cloned().collect();
        for session in sessions {
            session.ring(Doorbell::MESSAGES);
        }
    }
}

/// Held by a session whose connection another node took over: its drain stops at once, even
/// before the connection task has seen the doorbell.
#[derive(Debug, Default)]
pub(crate) struct Fence(std::sync::atomic::AtomicU64);

impl Fence {
    pub(crate) fn close(&self, connection: u64) {
        self.0.store(connection, Ordering::Release);
    }

    pub(crate) fn holds(&self, connection: u64) -> bool {
        self.0.load(Ordering::Acquire) == connection
    }
}
