//! One live connection per client id across the cluster, decided by compare-and-swap on the
//! JetStream key-value bucket `CAULDRON_SESSIONS`, never by a timer.
//!
//! A CONNECT writes its node and connection (a [`Holder`]) under the client id's key, expecting
//! the revision it read (JetStream refuses the write if anyone wrote since, and the node reads
//! and tries again). A persistent session's record rides along: parked there when its client
//! leaves, checkpointed at every SUBSCRIBE and UNSUBSCRIBE, adopted by the node its client
//! comes back to (see `handoff`).
//! Every node watches the bucket; revisions are totally ordered, so a node holding a connection
//! whose claim has revision `r` closes it (DISCONNECT 0x8E) when it sees a later claim by anyone
//! else. The watch delivers a node's own claim before any claim made after it, which is how a
//! claim still waiting for its answer is told apart from one that replaced it.
//!
//! A node that was paused (SIGSTOP, a frozen VM) cannot know what was claimed meanwhile: its
//! clock task sees the gap, and its connections deliver nothing until the watch has shown it a
//! heartbeat the node wrote after waking, by which point every claim made during the pause has
//! been read and its connections closed. The same heartbeat key (`n.<node>`) tells the others
//! the node is alive.

mod clock;
mod handover;
mod reaper;

use handover::{alive_subject, answer};

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, kv};
use cauldron_proto::ByteString;
use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::handoff::{self, Command, Holder, Parting};
use super::{subject, ClusterError};
use crate::broker::{Broker, Claiming, Directory};
use crate::message::Message;
use crate::session::{Session, SessionHandle};
use crate::store::{record, StoreError, StoredMessage, Ticket};

const BUCKET: &str = "CAULDRON_SESSIONS";
const CLIENT_KEY: &str = "c";
const NODE_KEY: &str = "n";
/// How often the clock task looks at the time.
const TICK: Duration = Duration::from_millis(250);
/// How often the node writes its heartbeat when nothing hurries it.
const HEARTBEAT: Duration = Duration::from_secs(2);
/// A gap in the clock task's ticks this long means the process was not running. Short, since
/// a pause shorter than this goes unnoticed; a busy machine taken for a paused one only costs a
/// heartbeat's round trip of held deliveries.
const PAUSED: Duration = Duration::from_secs(1);
/// How long a SUBSCRIBE's checkpoint or a park waits for the stream loop's export.
const EXPORT_BOUND: Duration = Duration::from_secs(10);
/// How long a CONNECT waits for the stream loop to adopt its session (a replay included).
const ADOPT_BOUND: Duration = Duration::from_secs(60);
/// How long a node waits for another to say it runs.
const ASK_BOUND: Duration = Duration::from_millis(500);
/// How long a CONNECT waits for the node its client is still connected to to hand the
/// session over.
const HANDOVER_WAIT: Duration = Duration::from_secs(2);
/// How long a CONNECT keeps trying to claim its client id while the registry does not answer.
const CLAIM_PATIENCE: Duration = Duration::from_secs(3);
/// Tries at a claim that others keep overtaking, before the client is refused.
const ATTEMPTS: usize = 8;

/// A connection of this node and the revision of its claim (0 until the watch shows it).
#[derive(Debug, Clone)]
struct Claim {
    connection: u64,
    revision: u64,
    /// Its will, written into every entry of the connection.
    will: Option<Parting>,
}

/// The parts of the node the registry works with: its stream loop (which exports and adopts
/// sessions) and its share groups.
pub(super) struct Neighbours {
    pub commands: tokio::sync::mpsc::Sender<Command>,
    pub groups: Arc<super::groups::Groups>,
}

pub(super) struct Registry {
    client: async_nats::Client,
    groups: Arc<super::groups::Groups>,
    bucket: kv::Store,
    /// The node's stream loop, which exports and adopts sessions.
    commands: tokio::sync::mpsc::Sender<Command>,
    node: Arc<str>,
    broker: Weak<Broker>,
    /// Client ids connected here, by key.
    claims: Mutex<HashMap<String, Claim>>,
    /// When each other node's heartbeat was last seen (see `reaper`).
    heard: Mutex<HashMap<String, Instant>>,
    /// Sessions other nodes handed to connections here, by key, until adopted.
    handovers: Mutex<HashMap<String, (u64, handoff::Parked)>>,
    handed: tokio::sync::Notify,
    epoch: Instant,
    /// Milliseconds since `epoch` at the clock task's last tick.
    ticked: AtomicU64,
    /// Set after a pause, until the watch shows the heartbeat of revision `confirming` or later.
    stale: AtomicBool,
    confirming: AtomicU64,
    /// The latest revision of this node's heartbeat the watch has shown.
    heartbeat_seen: AtomicU64,
    /// Milliseconds since `epoch` from which this node's own heartbeats have been stored
    /// without a failure (`u64::MAX` while they fail): silence of others counts from then.
    beating_since: AtomicU64,
}

impl Registry {
    /// Opens (or makes) the bucket and starts watching it, the clock and the heartbeat.
    pub(super) async fn start(
        client: &async_nats::Client,
        js: &jetstream::Context,
        broker: &Arc<Broker>,
        node: Arc<str>,
        replicas: usize,
        Neighbours { commands, groups }: Neighbours,
        shutdown: CancellationToken,
    ) -> Result<Arc<Registry>, ClusterError> {
        let bucket = match js.get_key_value(BUCKET).await {
            Ok(bucket) => bucket,
            Err(_) => js
                .create_key_value(kv::Config {
                    bucket: BUCKET.into(),
                    history: 1,
                    num_replicas: replicas,
                    storage: jetstream::stream::StorageType::File,
                    ..Default::default()
                })
                .await
                .map_err(|e| ClusterError(format!("bucket {BUCKET}: {e}")))?,
        };
        let watch = bucket.watch_all().await.map_err(|e| ClusterError(format!("watching {BUCKET}: {e}")))?;
        let asked = client
            .subscribe(alive_subject(&node))
            .await
            .map_err(|e| ClusterError(format!("subscribing to {}: {e}", alive_subject(&node))))?;
        tokio::spawn(answer(client.clone(), asked, shutdown.clone()));
        let registry = Arc::new(Registry {
            client: client.clone(),
            groups,
            bucket,
            commands,
            node,
            broker: Arc::downgrade(broker),
            claims: Mutex::default(),
            handovers: Mutex::default(),
            heard: Mutex::default(),
            handed: tokio::sync::Notify::new(),
            epoch: Instant::now(),
            ticked: AtomicU64::new(0),
            stale: AtomicBool::new(false),
            confirming: AtomicU64::new(0),
            heartbeat_seen: AtomicU64::new(0),
            beating_since: AtomicU64::new(0),
        });
        let wake = Arc::new(tokio::sync::Notify::new());
        tokio::spawn(Arc::clone(&registry).follow(watch, shutdown.clone()));
        tokio::spawn(Arc::clone(&registry).keep_time(Arc::clone(&wake), shutdown.clone()));
        tokio::spawn(Arc::clone(&registry).beat(wake, shutdown.clone()));
        tokio::spawn(Arc::clone(&registry).watch_nodes(shutdown));
        Ok(registry)
    }

    fn claims(&self) -> std::sync::MutexGuard<'_, HashMap<String, Claim>> {
        self.claims.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn now(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn heartbeat_key(&self) -> String {
        subject::encode(NODE_KEY, &self.node)
    }

    /// Writes this node's claim over whatever holds `key`, and returns what held it. A write
    /// that lost to another is tried again at once; one that failed (a bucket whose leader is
    /// being elected answers nobody) after a moment, for up to `CLAIM_PATIENCE`.
    async fn try_claim(&self, key: &str, connection: u64, resume: bool) -> Result<Option<Holder>, String> {
        let deadline = tokio::time::Instant::now() + CLAIM_PATIENCE;
        let mut overtaken_times = 0;
        loop {
            let failed = match self.try_claim_once(key, connection, resume).await {
                Ok(previous) => return Ok(previous),
                Err(None) => {
                    overtaken_times += 1;
                    if overtaken_times < ATTEMPTS {
                        continue;
                    }
                    "other nodes kept claiming the client id".to_string()
                }
                Err(Some(e)) => e,
            };
            if tokio::time::Instant::now() >= deadline {
                return Err(failed);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// One read and compare-and-swap: `Err(None)` when another write came in between.
    async fn try_claim_once(
        &self,
        key: &str,
        connection: u64,
        resume: bool,
    ) -> Result<Option<Holder>, Option<String>> {
        let (expected, previous) = match self.bucket.entry(key).await {
            Ok(Some(entry)) if entry.operation == kv::Operation::Put => {
                (entry.revision, record::from_bytes::<Holder>(&entry.value).ok())
            }
            Ok(entry) => (entry.map_or(0, |e| e.revision), None),
            Err(e) => return Err(Some(e.to_string())),
        };
        // A resumed session's record stays in the registry until it is checkpointed anew,
        // so a node that fails to adopt it loses nothing; a clean start discards it.
        let session = previous.as_ref().and_then(|p| p.session.clone()).filter(|s| resume && !s.expired());
        let holder = Holder {
            node: self.node.to_string(),
            connection,
            online: true,
            resume,
            handed_over: false,
            session,
            will: None,
        };
        match self.bucket.update(key, record::to_bytes(&holder).into(), expected).await {
            Ok(revision) => {
                self.claimed(key, connection, revision);
                Ok(previous)
            }
            Err(e) if overtaken(&e) => Err(None),
            Err(e) => Err(Some(e.to_string())),
        }
    }

    /// Notes the revision of this node's latest write for `connection`, if it still holds `key`.
    fn claimed(&self, key: &str, connection: u64, revision: u64) {
        if let Some(claim) = self.claims().get_mut(key).filter(|c| c.connection == connection) {
            claim.revision = claim.revision.max(revision);
        }
    }

    /// Writes `holder` for `connection`, expecting the revision of this node's last write for
    /// it; when this node wrote for the same connection meanwhile (its will, say, or another
    /// node handed the session over to it), onto that. A live connection's entry carries its
    /// will.
    async fn write(&self, key: &str, connection: u64, mut holder: Holder) -> Result<u64, kv::UpdateError> {
        let lost = || kv::UpdateError::new(kv::UpdateErrorKind::WrongLastRevision);
        for _ in 0..ATTEMPTS {
            let claim = self.claims().get(key).filter(|c| c.connection == connection).cloned();
            let Some(claim) = claim.filter(|c| c.revision != 0) else { return Err(lost()) };
            if holder.online {
                holder.will = claim.will;
            }
            match self.bucket.update(key, record::to_bytes(&holder).into(), claim.revision).await {
                Ok(revision) => {
                    self.claimed(key, connection, revision);
                    return Ok(revision);
                }
                Err(e) if overtaken(&e) => {
                    let Ok(Some(entry)) = self.bucket.entry(key).await else { return Err(e) };
                    let ours = record::from_bytes::<Holder>(&entry.value)
                        .is_ok_and(|h| h.node == *self.node && h.connection == connection && h.online);
                    if !ours {
                        return Err(e);
                    }
                    self.claimed(key, connection, entry.revision);
                }
                Err(e) => return Err(e),
            }
        }
        Err(lost())
    }

    /// The session as it stands, from the stream loop.
    async fn export(&self, session: &Arc<SessionHandle>) -> Result<handoff::Parked, String> {
        let (reply, parked) = tokio::sync::oneshot::channel();
        self.ask(Command::Export { session: Arc::clone(session), reply }, parked, EXPORT_BOUND).await
    }

    /// Has the stream loop adopt a parked session.
    async fn adopt(&self, client_id: ByteString, parked: handoff::Parked) -> Result<(), String> {
        let (reply, adopted) = tokio::sync::oneshot::channel();
        let command = Command::Adopt { client_id, parked: Box::new(parked), reply };
        self.ask(command, adopted, ADOPT_BOUND).await?
    }

    /// Hands `command` to the stream loop and waits at most `bound` for its answer: a loop held
    /// up (NATS out of reach while it pulls anew) fails the SUBSCRIBE or CONNECT waiting on it
    /// with an error instead of leaving the client without an answer.
    async fn ask<T>(
        &self,
        command: Command,
        answer: tokio::sync::oneshot::Receiver<T>,
        bound: Duration,
    ) -> Result<T, String> {
        let stopped = "the stream loop has stopped";
        let asked = async {
            self.commands.send(command).await.map_err(|_| stopped.to_string())?;
            answer.await.map_err(|_| stopped.to_string())
        };
        tokio::time::timeout(bound, asked)
            .await
            .map_err(|_| format!("the stream loop did not answer in {bound:?}"))?
    }

    /// Leaves a persistent session whose client went away in the registry, and this node's
    /// copy of it goes: the node its client comes back to adopts it from there.
    async fn park(&self, key: String, session: Arc<SessionHandle>, connection: u64) {
        let parked = match self.export(&session).await {
            Ok(parked) => parked,
            Err(e) => return warn!("cluster: session of {} not parked: {e}", session.client_id),
        };
        let holder = Holder {
            node: self.node.to_string(),
            connection,
            online: false,
            resume: false,
            handed_over: false,
            session: Some(parked),
            will: None,
        };
        match self.write(&key, connection, holder).await {
            Ok(_) => info!("cluster: session of {} parked in the registry", session.client_id),
            // Claimed meanwhile (on this node, the session is back online and stays).
            Err(e) if overtaken(&e) => {}
            Err(e) => {
                // Kept here, as a single node would: its client finds it if it comes back here.
                return warn!("cluster: session of {} not parked, kept on this node: {e}", session.client_id);
            }
        }
        {
            let mut claims = self.claims();
            if claims.get(&key).is_some_and(|c| c.connection == connection) {
                claims.remove(&key);
            }
        }
        if let Some(broker) = self.broker.upgrade() {
            broker.forget_session(&session);
        }
    }

    /// Applies the bucket's changes: claims that replace this node's connections close them,
    /// this node's heartbeats end a pause's doubt.
    async fn follow(self: Arc<Self>, mut watch: kv::Watch, shutdown: CancellationToken) {
        let own_heartbeat = self.heartbeat_key();
        loop {
            let entry = tokio::select! {
                entry = watch.next() => entry,
                _ = shutdown.cancelled() => return,
            };
            let entry = match entry {
                Some(Ok(entry)) => entry,
                Some(Err(e)) => {
                    warn!("cluster: following {BUCKET}: {e}");
                    continue;
                }
                None => return,
            };
            if entry.key == own_heartbeat {
                self.heartbeat_seen.fetch_max(entry.revision, Ordering::AcqRel);
                self.confirm();
                continue;
            }
            if let Some(node) = subject::decode(NODE_KEY, &entry.key) {
                if entry.operation == kv::Operation::Put {
                    self.heard(node);
                }
                continue;
            }
            if entry.operation != kv::Operation::Put {
                continue;
            }
            let Ok(holder) = record::from_bytes::<Holder>(&entry.value) else { continue };
            let (connection, node) = (holder.connection, holder.node.as_str());
            let replaced = {
                let mut claims = self.claims();
                match claims.get_mut(&entry.key) {
                    // Parked, or taken for dead while this node was silent: it ends here.
                    Some(claim)
                        if node == &*self.node && connection == claim.connection && !holder.online =>
                    {
                        claims.remove(&entry.key).map(|c| c.connection)
                    }
                    Some(claim) if node == &*self.node && connection == claim.connection => {
                        claim.revision = entry.revision;
                        if let Some(parked) = holder.session.as_ref().filter(|_| holder.handed_over) {
                            let handed = (connection, parked.clone());
                            self.handovers
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .insert(entry.key.clone(), handed);
                            self.handed.notify_waiters();
                        }
                        None
                    }
                    // A claim still unseen is newer than anything the watch shows before it.
                    Some(claim) if claim.revision != 0 && entry.revision > claim.revision => {
                        claims.remove(&entry.key).map(|c| c.connection)
                    }
                    _ => None,
                }
            };
            if let (Some(connection), Some(broker)) = (replaced, self.broker.upgrade()) {
                if let Some(client_id) = subject::decode(CLIENT_KEY, &entry.key) {
                    if node != &*self.node {
                        info!("Client {client_id} connected to node {node}, closing its connection here.");
                    }
                    let client_id = ByteString::from(client_id);
                    match broker
                        .local_session(&client_id)
                        .filter(|s| holder.resume && s.read(Session::persistent))
                    {
                        Some(session) => {
                            let handover = Arc::clone(&self).hand_over(
                                entry.key,
                                entry.revision,
                                holder,
                                session,
                                connection,
                            );
                            tokio::spawn(handover);
                        }
                        None => broker.taken_over_elsewhere(&client_id, connection),
                    }
                }
            }
        }
    }
}

/// Whether a compare-and-swap lost to another write. JetStream says so with one of two codes
/// (10071, or 10164 from servers that check the subject's last sequence), and the client
/// library names only the first.
fn overtaken(e: &kv::UpdateError) -> bool {
    e.kind() == kv::UpdateErrorKind::WrongLastRevision || e.to_string().contains("wrong last sequence")
}

impl Directory for Registry {
    fn claim(self: Arc<Self>, client_id: ByteString, connection: u64, resume: bool) -> Claiming {
        let key = subject::encode(CLIENT_KEY, &client_id);
        // In the table before the write: the watch may show the claim before the write returns.
        self.claims().insert(key.clone(), Claim { connection, revision: 0, will: None });
        Box::pin(async move {
            let previous = match self.try_claim(&key, connection, resume).await {
                Ok(previous) => previous,
                Err(e) => {
                    let mut claims = self.claims();
                    if claims.get(&key).is_some_and(|c| c.connection == connection) {
                        claims.remove(&key);
                    }
                    return Err(e);
                }
            };
            let here = self.broker.upgrade().and_then(|b| b.local_session(&client_id)).is_some();
            let Some(previous) = previous.filter(|p| resume && !here && p.session.is_some()) else {
                return Ok(());
            };
            // Still connected elsewhere: that node hands the session over as it stands, unless
            // it is gone (nobody answers for it).
            let handed = match previous.online && self.answers(&previous.node).await {
                true => self.handed_over(&key, connection).await,
                false => None,
            };
            match handed.or(previous.session).filter(|s| !s.expired()) {
                Some(parked) => self.adopt(client_id, parked).await,
                None => Ok(()),
            }
        })
    }

    fn release(self: Arc<Self>, session: &Arc<SessionHandle>, connection: u64) {
        let key = subject::encode(CLIENT_KEY, &session.client_id);
        let claim = self.claims().get(&key).cloned().filter(|c| c.connection == connection);
        let Some(claim) = claim else { return };
        let parks = session.read(Session::persistent) && !session.is_fenced(connection);
        if parks {
            let session = Arc::clone(session);
            tokio::spawn(async move { self.park(key, session, connection).await });
            return;
        }
        self.claims().remove(&key);
        // Deleted only if nobody claimed it since; with the revision still unknown the key
        // stays, which costs nothing: the next claim replaces it.
        if claim.revision != 0 {
            let bucket = self.bucket.clone();
            tokio::spawn(async move {
                let _ = bucket.delete_expect_revision(&key, Some(claim.revision)).await;
            });
        }
    }

    fn checkpoint(self: Arc<Self>, session: &Arc<SessionHandle>, connection: u64) -> Option<Ticket> {
        if !session.read(Session::persistent) {
            return None;
        }
        let key = subject::encode(CLIENT_KEY, &session.client_id);
        let session = Arc::clone(session);
        let (done, ticket) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let written = async {
                let parked = self.export(&session).await?;
                let holder = Holder {
                    node: self.node.to_string(),
                    connection,
                    online: true,
                    resume: true,
                    handed_over: false,
                    session: Some(parked),
                    will: None,
                };
                self.write(&key, connection, holder).await.map_err(|e| e.to_string())
            };
            let _ = done
                .send(written.await.map(drop).map_err(|e| StoreError::Io(format!("session registry: {e}"))));
        });
        Some(ticket)
    }

    fn keep_will(self: Arc<Self>, session: &Arc<SessionHandle>, connection: u64, will: Message, delay: u32) {
        let key = subject::encode(CLIENT_KEY, &session.client_id);
        let parting = Parting { message: StoredMessage::new(&will), delay };
        match self.claims().get_mut(&key).filter(|c| c.connection == connection) {
            Some(claim) => claim.will = Some(parting.clone()),
            None => return,
        }
        tokio::spawn(async move {
            // Onto the connection's current entry, whoever wrote it last (a hand-over, say).
            for _ in 0..ATTEMPTS {
                let Ok(Some(entry)) = self.bucket.entry(&key).await else { break };
                let Ok(mut holder) = record::from_bytes::<Holder>(&entry.value) else { break };
                if holder.node != *self.node || holder.connection != connection || !holder.online {
                    break;
                }
                holder.will = Some(parting.clone());
                match self.bucket.update(&key, record::to_bytes(&holder).into(), entry.revision).await {
                    Ok(revision) => return self.claimed(&key, connection, revision),
                    Err(e) if overtaken(&e) => tokio::time::sleep(Duration::from_millis(50)).await,
                    Err(e) => return warn!("cluster: the will of {key} not registered: {e}"),
                }
            }
        });
    }

    fn join_group(self: Arc<Self>, filter: &str) -> Option<Ticket> {
        let (done, ticket) = tokio::sync::oneshot::channel();
        let joined = Arc::clone(&self.groups).join(filter.to_string());
        tokio::spawn(async move {
            let _ = done.send(joined.await.map_err(|e| StoreError::Io(format!("shared group: {e}"))));
        });
        Some(ticket)
    }

    fn node(&self) -> &str {
        &self.node
    }

    fn nodes(&self) -> Vec<String> {
        let mut nodes: Vec<String> =
            self.heard.lock().unwrap_or_else(|e| e.into_inner()).keys().cloned().collect();
        nodes.push(self.node.to_string());
        nodes.sort();
        nodes
    }

    fn current(&self) -> bool {
        !self.stale.load(Ordering::Acquire)
            && self.now().saturating_sub(self.ticked.load(Ordering::Acquire)) < PAUSED.as_millis() as u64
    }
}
