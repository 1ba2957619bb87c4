//! Shared broker state: the subscription trie, retained messages and the session table, and the
//! operations that touch more than one session (fan-out, subscribe, takeover).
//!
//! Locking order, to stay deadlock-free: sessions table, then router, then one session. No lock
//! is ever held across an `.await`. A publish holds the router's read lock only to copy out who
//! its targets are (a few pointer copies each) and delivers after letting go, so a SUBSCRIBE
//! never waits behind a long fan-out, nor does the next publisher behind that SUBSCRIBE.
//!
//! With a store, every change that must survive a restart is submitted as store operations;
//! the operations that return a `Ticket` give the caller something to wait on before it
//! acknowledges.

mod adopt;
mod directory;
mod restore;
mod route;
mod table;
pub(crate) mod tap;

pub(crate) use directory::Fence;
pub(crate) use directory::{Claiming, Directory};
pub use tap::Tapped;

use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use cauldron_proto::{topic, ByteString, QoS, ReasonCode, RetainHandling, Subscription};

use crate::authz::{AllowAll, Authorizer, ClientInfo};
use crate::config::{Config, Redirect};
use crate::message::Message;
use crate::metrics::{self, DropReason, Metrics};
use crate::retain::Retained;
use crate::router::{Entry, Router};
use crate::session::{Delivery, Limits, Session, SessionHandle};
use crate::store::record::SourcedMessage;
use crate::store::{self, Durability, Op, Persistence, Snapshot, Store, StoreError, Ticket};

/// How long a CONNECT waits for the connection it takes over to handle what it had received:
/// a poll of that connection's task, unless its worker is busy.
const SETTLE_BOUND: std::time::Duration = std::time::Duration::from_millis(500);

pub struct Broker {
    pub config: Config,
    router: RwLock<Router>,
    /// In-process observers ([`Broker::tap`]): rare, and apart from the router so that adding
    /// one never waits on a publish.
    taps: RwLock<Vec<tap::Tap>>,
    /// A node of a cluster: other nodes may have subscribers this one does not see.
    clustered: std::sync::atomic::AtomicBool,
    /// A cluster's registry of who holds each client id.
    directory: std::sync::OnceLock<Arc<dyn Directory>>,
    retained: RwLock<Retained>,
    sessions: Mutex<table::SessionTable>,
    redirect: RwLock<Option<Redirect>>,
    authorizer: Arc<dyn Authorizer>,
    /// Some listener has its own ACL, so deliveries must ask each session's.
    listener_authorizers: std::sync::atomic::AtomicBool,
    persistence: Option<Arc<Persistence>>,
    /// What shapes each session, from the config; shared by all of them.
    limits: Arc<Limits>,
    /// Payload bytes queued across all sessions, for the memory ceiling.
    queued_memory: Arc<crate::session::QueuedBytes>,
    pub metrics: Arc<Metrics>,
    /// Every connection's keep-alive deadline, swept by one task.
    pub(crate) keep_alives: Arc<crate::connection::KeepAlives>,
    /// Rings connections that went idle a second ago, so they park (`Doorbell::QUIET`).
    pub(crate) quiet_checks: Arc<crate::connection::KeepAlives>,
    /// Running bridges, for `/metrics`, and their tasks, which end before the store closes.
    bridges: Mutex<Vec<Arc<crate::bridge::BridgeStatus>>>,
    bridge_tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    started: Instant,
}

/// Gauges computed from the broker's state, for `$SYS` and `/metrics`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stats {
    pub sessions_online: u64,
    pub sessions_offline: u64,
    pub queued_messages: u64,
    pub queued_bytes: u64,
    pub inflight: u64,
    pub retained: u64,
    pub subscriptions: u64,
}

impl Routed {
    /// Routed to no one.
    fn nowhere() -> Routed {
        Routed { matched: 0, over_ceiling: 0, durable: None, observed: None, congested: None }
    }

    /// The sessions that took the message, or `Err` if every one refused it for the memory
    /// ceiling (MQTT 5: quota exceeded).
    pub fn accepted(&self) -> Result<usize, ()> {
        match self.matched > 0 && self.over_ceiling == self.matched {
            true => Err(()),
            false => Ok(self.matched),
        }
    }
}

/// What became of a published message.
pub struct Routed {
    /// Sessions it was offered to; at least 1 when a subscription matched but No Local held it
    /// back (there was a subscriber).
    pub matched: usize,
    /// Of those, how many refused it for the broker-wide memory ceiling.
    pub over_ceiling: usize,
    /// Resolves once it is stored (retained, or queued for a persistent session).
    pub durable: Option<Ticket>,
    /// Resolves once every tap that saw it has kept it (see [`Broker::tap`]).
    pub observed: Option<Ticket>,
    /// A connected subscriber whose queue it took past the queue's limit: the publisher
    /// should stop reading until that queue has room (`SessionHandle::has_room`), for a
    /// bounded time, rather than have later messages dropped.
    pub congested: Option<Arc<SessionHandle>>,
}

/// Which of the matching sessions a message is routed to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reach {
    /// Every one (a single node; a message from another cluster node).
    All,
    /// A cluster node's own client published it: persistent sessions take their copy of what
    /// goes into the cluster's stream from the stream, in its order, with its positions, so
    /// that another node can resume them from there (see `cluster`).
    NotFromStream,
    /// The stream's copy of a message from a client here: only those persistent sessions.
    FromStreamOnly,
}

/// Whether the cluster carries `message` in its stream (QoS 1 and 2; `$SYS` stays local).
fn via_stream(message: &Message) -> bool {
    message.qos != QoS::AtMostOnce && !message.topic.starts_with("$SYS/")
}

/// Poisoning only means another thread panicked mid-section; every section here leaves the
/// data consistent, so carry on with it rather than take the whole broker down.
macro_rules! lock {
    ($e:expr) => {
        $e.unwrap_or_else(|poisoned| poisoned.into_inner())
    };
}
pub(crate) use lock;

impl Broker {
    pub fn new(config: Config) -> Arc<Broker> {
        Broker::with_authorizer(config, Arc::new(AllowAll))
    }

    /// A broker whose access control is decided by `authorizer`.
    pub fn with_authorizer(config: Config, authorizer: Arc<dyn Authorizer>) -> Arc<Broker> {
        Arc::new(Broker::build(config, authorizer, None))
    }

    /// A broker that keeps its state in `store`, starting from what `snapshot` holds.
    pub fn open(
        config: Config,
        authorizer: Arc<dyn Authorizer>,
        store: Box<dyn Store>,
        snapshot: Snapshot,
        durability: Durability,
    ) -> Result<Arc<Broker>, StoreError> {
        let metrics = Arc::new(Metrics::new());
        let observer = Arc::clone(&metrics);
        let observe = Box::new(move |took, ops| {
            observer.commit_seconds.observe_duration(took);
            observer.commit_ops.observe(ops as f64);
        });
        let persistence = Persistence::start(store, durability, observe);
        let mut broker = Broker::build(config, authorizer, Some(Arc::new(persistence)));
        broker.metrics = metrics;
        let rewritten = broker.restore(snapshot)?;
        if let Some(persistence) = &broker.persistence {
            // Before anything else is written: a start that cannot rewrite what it read stops.
            persistence.commit_before_start(rewritten)?;
            if persistence.failures() > 0 {
                return Err(StoreError::Io("rewriting the restored state failed".into()));
            }
        }
        Ok(Arc::new(broker))
    }

    fn build(
        config: Config,
        authorizer: Arc<dyn Authorizer>,
        persistence: Option<Arc<Persistence>>,
    ) -> Broker {
        Broker {
            persistence,
            authorizer,
            listener_authorizers: Default::default(),
            redirect: RwLock::new(config.redirect.clone()),
            limits: Arc::new(Broker::limits(&config)),
            config,
            router: RwLock::default(),
            taps: RwLock::default(),
            clustered: std::sync::atomic::AtomicBool::new(false),
            directory: std::sync::OnceLock::new(),
            retained: RwLock::default(),
            sessions: Mutex::default(),
            metrics: Arc::new(Metrics::new()),
            keep_alives: Arc::new(crate::connection::KeepAlives::ringing(
                crate::session::Doorbell::KEEP_ALIVE,
            )),
            quiet_checks: Arc::new(crate::connection::KeepAlives::ringing(crate::session::Doorbell::QUIET)),
            bridges: Mutex::default(),
            bridge_tasks: Mutex::default(),
            started: Instant::now(),
            queued_memory: Arc::default(),
        }
    }

    /// Observes every message published on topics matching `filter` (as a subscription would
    /// see it, but with no session, queue or access check of its own). The publisher's
    /// acknowledgement waits for each [`Tapped::done`]; up to `capacity` messages wait for the
    /// receiver, and beyond that the broker hands them over from a task instead of dropping them.
    pub fn tap(&self, filter: &str, capacity: usize) -> tokio::sync::mpsc::Receiver<Tapped> {
        let (sender, receiver) = tokio::sync::mpsc::channel(capacity.max(1));
        lock!(self.taps.write()).push(tap::Tap { filter: Some(filter.to_string()), sender });
        receiver
    }

    /// Marks this broker as a cluster node (from joining on).
    pub fn set_clustered(&self) {
        self.clustered.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether this broker is a cluster node: "no subscriber here" is not "no subscriber".
    pub fn is_clustered(&self) -> bool {
        self.clustered.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// A tap on every topic but `$SYS/`, `$` topics included (the cluster forwards them all).
    pub fn tap_everything(&self, capacity: usize) -> tokio::sync::mpsc::Receiver<Tapped> {
        let (sender, receiver) = tokio::sync::mpsc::channel(capacity.max(1));
        lock!(self.taps.write()).push(tap::Tap { filter: None, sender });
        receiver
    }

    /// Queues store operations; the ticket resolves when they are durable.
    pub fn submit(&self, ops: Vec<Op>) -> Option<Ticket> {
        self.persistence.as_ref().and_then(|p| p.submit(ops))
    }

    /// Whether the store can write (true without a store): false from a failed commit until
    /// the store writes again, which `/readyz` reports.
    pub fn store_writable(&self) -> bool {
        self.persistence.as_ref().is_none_or(|p| p.is_healthy())
    }

    /// Commits what is pending and stops the store writer (at shutdown).
    pub fn close_store(&self) {
        if let Some(persistence) = &self.persistence {
            persistence.shutdown();
        }
    }

    fn new_session(&self, client_id: &ByteString) -> Arc<SessionHandle> {
        SessionHandle::new(
            client_id.clone(),
            Arc::clone(&self.limits),
            self.persistence.clone(),
            Arc::clone(&self.queued_memory),
        )
    }

    fn limits(config: &Config) -> Limits {
        Limits {
            max_inflight: config.max_inflight_messages,
            // Mosquitto's 0: no limit.
            max_queued: match config.max_queued_messages {
                0 => usize::MAX,
                n => n,
            },
            max_queued_bytes: config.max_queued_bytes,
            drop_oldest: config.drop_oldest,
            queue_qos0: config.queue_qos0_messages,
            memory_ceiling: config.memory_ceiling,
        }
    }

    /// Routes one message to every matching subscription and updates the retained store.
    pub fn publish(&self, message: Message) -> Routed {
        self.route(message, true, self.own_reach())
    }

    /// Where a message a client of this node published goes.
    fn own_reach(&self) -> Reach {
        match self.is_clustered() {
            true => Reach::NotFromStream,
            false => Reach::All,
        }
    }

    /// Routes a message another cluster node received from its client: to this node's
    /// subscriptions and retained store, but not to taps (which saw it on that node: the
    /// cluster does not forward it again, the recorder does not store it twice).
    pub fn publish_from_cluster(&self, message: Message) -> Routed {
        self.route(message, false, Reach::All)
    }

    /// Routes the cluster stream's copy of a message a client of this node published: to the
    /// persistent sessions `publish` left it for, nothing else.
    pub fn publish_own_from_stream(&self, message: Message) -> Routed {
        self.route(message, false, Reach::FromStreamOnly)
    }

    /// Sets (or, with an empty payload, removes) a retained message as the cluster's retained
    /// store says it is, without routing it to anyone (it was routed where it was published);
    /// resolves once stored here.
    pub fn retain_from_cluster(&self, message: Message) -> Option<Ticket> {
        let message = Arc::new(message).compacted();
        let op = self.keep_retained(&message)?;
        self.submit(vec![op])
    }

    /// Puts `message` in the retained store and returns the store operation that keeps it.
    fn keep_retained(&self, message: &Arc<Message>) -> Option<Op> {
        lock!(self.retained.write()).set(message);
        // `$SYS` values are recomputed at start: not worth a write every interval.
        if self.persistence.is_none() || message.topic.starts_with("$SYS/") {
            return None;
        }
        Some(match message.payload.is_empty() {
            true => Op::DeleteRetained(message.topic.to_string()),
            false => Op::PutRetained(
                message.topic.to_string(),
                store::record::to_bytes(&SourcedMessage::new(message)),
            ),
        })
    }

    /// Publishes a message nobody waits on (wills, messages handed back by a leaving member).
    fn publish_detached(&self, message: Message) {
        drop(self.publish(message).durable);
    }

    /// Adds a subscription for `session` and returns the SUBACK code with the retained messages
    /// it must receive [MQTT-3.3.1-8], and the ticket of the session's new record: SUBACK goes
    /// once that is durable.
    pub fn subscribe(
        &self,
        session: &Arc<SessionHandle>,
        sub: &Subscription,
        subscription_id: Option<u32>,
    ) -> (ReasonCode, Vec<Delivery>, Option<Ticket>) {
        let mut options = sub.options;
        options.qos = options.qos.min(self.config.max_qos);
        let entry = Entry { session: Arc::clone(session), options, subscription_id };
        let is_new = lock!(self.router.write()).insert(&sub.filter, entry);
        let ((), durable) = session.edit(|s| s.subscribe(sub.filter.clone(), options, subscription_id));
        let code = match options.qos {
            QoS::AtMostOnce => ReasonCode::Success,
            QoS::AtLeastOnce => ReasonCode::GrantedQoS1,
            QoS::ExactlyOnce => ReasonCode::GrantedQoS2,
        };
        let send_retained = match sub.options.retain_handling {
            RetainHandling::OnSubscribe => true,
            RetainHandling::OnNewSubscribe => is_new,
            RetainHandling::Never => false,
        };
        // Shared subscriptions get no retained messages on subscribe (MQTT 5.0 section 4.8.2).
        if !send_retained || topic::parse_shared(&sub.filter).is_some() {
            return (code, Vec::new(), durable);
        }
        let mut retained = lock!(self.retained.read()).matching(&sub.filter);
        if self.checks_reads() {
            retained.retain(|m| self.reader_may(session, &m.topic));
        }
        if self.config.check_retain_source {
            retained.retain(|m| self.source_may_still_write(session, m));
        }
        let deliveries = retained
            .into_iter()
            .map(|message| Delivery {
                qos: self.outgoing_qos(options.qos, message.qos),
                retain: true,
                subscription_ids: subscription_id.into_iter().collect(),
                shared: None,
                seq: 0,
                message,
            })
            .collect();
        (code, deliveries, durable)
    }

    /// Whether a retained message's publisher may still publish to its topic, under the access
    /// control `session`'s listener has now (Mosquitto's check_retain_source). A message the
    /// broker made itself has no publisher and always may.
    fn source_may_still_write(&self, session: &SessionHandle, message: &Message) -> bool {
        let Some(client_id) = message.publisher.clone() else {
            return true;
        };
        let source = ClientInfo { client_id, username: message.publisher_user.clone() };
        match session.authorizer() {
            Some(own) => own.can_publish(&source, &message.topic),
            None => self.authorizer.can_publish(&source, &message.topic),
        }
    }

    /// Removes a subscription; returns whether it existed, and the ticket of the session's
    /// new record, as `subscribe`.
    pub fn unsubscribe(&self, session: &Arc<SessionHandle>, filter: &str) -> (bool, Option<Ticket>) {
        let ((), durable) = session.edit(|s| s.unsubscribe(filter));
        (lock!(self.router.write()).remove(filter, session), durable)
    }

    /// Finds or creates the session for a CONNECT. An existing connection with the same client
    /// id is closed [MQTT-3.1.4-2]; its session is resumed unless a clean start was asked for or
    /// it was not persistent. Returns the session and the Session Present flag.
    pub fn open_session(&self, client_id: &ByteString, clean_start: bool) -> (Arc<SessionHandle>, bool) {
        let mut sessions = lock!(self.sessions.lock());
        if let Some(existing) = sessions.get(client_id).cloned() {
            existing.kick();
            let (resumable, _) = existing.edit(|s| {
                let resumable = !clean_start && s.persistent() && !s.is_expired(Instant::now());
                // Back within the will delay: the will is not sent [MQTT-3.1.3-9], nor is one
                // the taken-over connection has yet to park. A new connection with a clean
                // start ends the session here, and its will is not sent either
                // [MQTT-3.1.2-8].
                drop(s.take_pending_will(None));
                match resumable {
                    true => s.resume(),
                    false => s.supersede(),
                }
                resumable
            });
            if resumable {
                return (existing, true);
            }
            self.end_session(&existing);
        }
        let handle = self.new_session(client_id);
        sessions.insert(Arc::clone(&handle));
        (handle, false)
    }

    /// Called when a connection ends. A session that does not persist is discarded with its
    /// subscriptions; a persistent one stays to collect messages.
    pub fn close_session(&self, session: &Arc<SessionHandle>, connection: u64) {
        self.release_session(session, connection);
        // A successor waiting in `settle_connection` finds the session as this left it.
        session.notify_settled();
    }

    fn release_session(&self, session: &Arc<SessionHandle>, connection: u64) {
        let (released, _) = session.edit(|s| {
            // Taken over: the new connection owns it now.
            s.detach(connection, Instant::now()).then(|| (s.persistent(), s.take_shared()))
        });
        let Some((persistent, handed_back)) = released else { return };
        // A session whose client another cluster node took over lives on there.
        let persistent = persistent && !session.is_fenced(connection);
        session.set_online(false);
        session.clear_connection(connection);
        self.reroute_shared(session, handed_back);
        if persistent {
            return;
        }
        let mut sessions = lock!(self.sessions.lock());
        if sessions.get(&session.client_id).is_some_and(|s| Arc::ptr_eq(s, session)) {
            sessions.remove(&session.client_id);
        }
        drop(sessions);
        self.end_session(session);
    }

    /// Before a CONNECT for `client_id` opens its session: lets a connection still attached
    /// to it handle what it already received (see `SessionHandle::settle_connection`).
    pub async fn settle_predecessor(&self, client_id: &ByteString) {
        let existing = lock!(self.sessions.lock()).get(client_id).cloned();
        if let Some(existing) = existing {
            existing.settle_connection(SETTLE_BOUND).await;
        }
    }

    /// Offers unacknowledged shared-subscription messages of a departing member to another
    /// connected member; with none, the departing session keeps them.
    fn reroute_shared(&self, leaving: &Arc<SessionHandle>, deliveries: Vec<Delivery>) {
        for delivery in deliveries {
            let filter = delivery.shared.as_deref().cloned().unwrap_or_default();
            let other = lock!(self.router.read()).other_member(&filter, leaving);
            let (target, qos) = match &other {
                Some(entry) => (&entry.session, self.outgoing_qos(entry.options.qos, delivery.message.qos)),
                None => (leaving, delivery.qos),
            };
            target.deliver(Delivery { qos, seq: 0, ..delivery });
        }
    }

    /// Ends offline sessions whose expiry interval has passed, with their subscriptions and
    /// queued messages; a will still waiting on its delay is published. Returns how many ended.
    pub fn expire_sessions(&self, now: Instant) -> usize {
        let expired: Vec<Arc<SessionHandle>> = {
            let mut sessions = lock!(self.sessions.lock());
            let expired: Vec<_> =
                sessions.values().filter(|s| s.read(|s| s.is_expired(now))).cloned().collect();
            for session in &expired {
                sessions.remove(&session.client_id);
            }
            expired
        };
        metrics::add(&self.metrics.sessions_expired, expired.len() as u64);
        for session in &expired {
            if let (Some(will), _) = session.edit(|s| s.take_pending_will(None)) {
                self.publish_detached(will);
            }
            self.end_session(session);
        }
        expired.len()
    }

    /// Discards a session that is no longer in the table: its subscriptions leave the trie and
    /// its stored record, queue and QoS 2 state leave the store.
    fn end_session(&self, session: &Arc<SessionHandle>) {
        let (filters, _) = session.edit(Session::end);
        let mut router = lock!(self.router.write());
        for filter in filters {
            router.remove(&filter, session);
        }
    }

    /// The QoS a message published at `published` goes out at to a subscription granted
    /// `granted`: the lower of the two (section 3.8.4 of both specifications), unless the operator asked for the
    /// subscription's (`upgrade_outgoing_qos`).
    fn outgoing_qos(&self, granted: QoS, published: QoS) -> QoS {
        match self.config.upgrade_outgoing_qos {
            true => granted,
            false => granted.min(published),
        }
    }

    /// Publishes a will whose delay ran out, if `connection` left it and it is still pending.
    pub fn publish_delayed_will(&self, session: &SessionHandle, connection: u64) {
        if let (Some(will), _) = session.edit(|s| s.take_pending_will(Some(connection))) {
            self.publish_detached(will);
        }
    }

    pub fn authorizer(&self) -> &dyn Authorizer {
        &*self.authorizer
    }

    /// Gives a session its listener's own authorizer (`per_listener_settings`).
    pub fn use_listener_authorizer(&self, session: &SessionHandle, authorizer: Option<Arc<dyn Authorizer>>) {
        if authorizer.is_some() {
            self.listener_authorizers.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        session.set_authorizer(authorizer);
    }

    /// Whether deliveries must be checked at all (the hot path skips it when nobody restricts).
    fn checks_reads(&self) -> bool {
        !self.authorizer.allows_everything()
            || self.listener_authorizers.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// May this session receive a message on `topic`? Its listener's ACL if it has one.
    /// After the access lists changed (SIGHUP): queued messages a subscriber may no longer
    /// read are dropped, as Mosquitto checks at sending time. Returns how many.
    pub fn recheck_reads(&self) -> usize {
        let sessions: Vec<Arc<SessionHandle>> = lock!(self.sessions.lock()).values().cloned().collect();
        let mut dropped = 0;
        for session in sessions {
            let (gone, _) = session.edit(|s| s.drop_queued_unless(|topic| self.reader_may(&session, topic)));
            dropped += gone;
        }
        self.metrics.dropped_for(DropReason::NotAuthorized, dropped as u64);
        dropped
    }

    fn reader_may(&self, session: &SessionHandle, topic: &str) -> bool {
        let client = session.client_info();
        match session.authorizer() {
            Some(own) => own.can_receive(&client, topic),
            None => self.authorizer.can_receive(&client, topic),
        }
    }

    /// Starts (or with `None` ends) redirecting clients to another server. Every connected
    /// client is disconnected; MQTT 5 clients are told where to go.
    pub fn redirect(&self, redirect: Option<Redirect>) {
        let moving = redirect.is_some();
        *lock!(self.redirect.write()) = redirect;
        if moving {
            let sessions: Vec<_> = lock!(self.sessions.lock()).values().cloned().collect();
            sessions.iter().for_each(|s| s.kick());
        }
    }

    /// Tells every connected client's connection to close for shutdown (MQTT 5 clients hear
    /// DISCONNECT 0x8B). Connections still in their handshake see the server's token instead.
    pub fn shut_connections(&self) {
        let sessions: Vec<_> = lock!(self.sessions.lock()).values().cloned().collect();
        sessions.iter().for_each(|s| s.ring(crate::session::Doorbell::SHUTDOWN));
    }

    /// The redirection in force, if any.
    pub fn redirection(&self) -> Option<Redirect> {
        lock!(self.redirect.read()).clone()
    }

    /// How long the broker has run.
    pub(crate) fn add_bridge(
        &self,
        status: Arc<crate::bridge::BridgeStatus>,
        task: tokio::task::JoinHandle<()>,
    ) {
        lock!(self.bridges.lock()).push(status);
        lock!(self.bridge_tasks.lock()).push(task);
    }

    /// Waits for the bridges to end (after shutdown), at most `bound`.
    pub async fn bridges_stopped(&self, bound: std::time::Duration) {
        let tasks = std::mem::take(&mut *lock!(self.bridge_tasks.lock()));
        let _ = tokio::time::timeout(bound, futures_util::future::join_all(tasks)).await;
    }

    pub fn bridges(&self) -> Vec<Arc<crate::bridge::BridgeStatus>> {
        lock!(self.bridges.lock()).clone()
    }

    pub fn uptime(&self) -> std::time::Duration {
        self.started.elapsed()
    }

    /// Payload bytes queued across all sessions.
    pub fn queued_memory(&self) -> usize {
        self.queued_memory.total()
    }

    /// A consistent-enough look at the sessions, queues and stores, one lock at a time.
    pub fn stats(&self) -> Stats {
        let sessions: Vec<_> = lock!(self.sessions.lock()).values().cloned().collect();
        let mut stats = Stats::default();
        for session in sessions {
            session.read(|state| {
                match state.is_online() {
                    true => stats.sessions_online += 1,
                    false => stats.sessions_offline += 1,
                }
                stats.queued_messages += state.queued() as u64;
                stats.queued_bytes += state.queued_bytes() as u64;
                stats.inflight += state.inflight() as u64;
            });
        }
        stats.retained = self.retained_count() as u64;
        stats.subscriptions = self.subscription_count() as u64;
        stats
    }

    /// Number of sessions known, online or not.
    pub fn session_count(&self) -> usize {
        lock!(self.sessions.lock()).len()
    }

    pub fn subscription_count(&self) -> usize {
        lock!(self.router.read()).len()
    }

    pub fn retained_count(&self) -> usize {
        lock!(self.retained.read()).len()
    }
}
