//! Cluster mode: several cauldron nodes, one broker to the clients, with NATS JetStream carrying
//! messages between them. Every node keeps its whole MQTT engine; nothing here is on the
//! publish path of a node that is not in a cluster.
//!
//! What a node's clients publish is seen by a tap on every topic (after access control) and
//! forwarded:
//! - QoS 0 over core NATS (`cauldron.q0.<topic>`): no acknowledgement, so it keeps flowing
//!   between live nodes whatever JetStream's state;
//! - QoS 1 and 2 into the stream `CAULDRON_MSGS` (`cauldron.msg.<topic>`), and the publisher's
//!   PUBACK/PUBREC waits until JetStream has stored it (on a quorum of its replicas): an
//!   acknowledged message is durable cluster-wide.
//!
//! Retained messages are kept cluster-wide in the JetStream key-value bucket `CAULDRON_RETAINED`
//! (one value per topic, `replicas` copies): a node puts each retained message its clients
//! publish (an empty one deletes), the publisher's acknowledgement waiting for that too; every
//! node loads the bucket when it joins, before it serves, and follows its changes, so a retained
//! message set on one node is delivered on subscribe on every node, one that joined later too,
//! and a deleted one is gone everywhere.
//!
//! Each node reads the stream through one durable consumer of its own (`node-<id>`) and every
//! QoS 0 message through one subscription, so the number of consumers grows with nodes, never
//! with subscriptions. A message from another node is routed to this node's subscriptions
//! ([`Broker::publish_from_cluster`]) and, for the stream, acknowledged to JetStream once what
//! it queued for persistent sessions here is committed. Messages carry their origin node (a
//! header) so a node skips its own. The wire format is the broker's stored-message record: the
//! MQTT 5 PUBLISH with every property, the publisher's client id (No Local works across nodes)
//! and the expiry time.

mod groups;
mod handoff;
mod sessions;
pub mod subject;

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer, kv, stream};
use async_nats::HeaderMap;
use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::broker::{Broker, Tapped};
use crate::message::Message;
use crate::store::record::{self, SourcedMessage};

/// The stream of QoS 1 and 2 messages.
const STREAM: &str = "CAULDRON_MSGS";
/// The bucket of retained messages, keyed by topic.
const RETAINED: &str = "CAULDRON_RETAINED";
/// The first token of a retained message's key (a key is the topic's subject under it).
const RETAINED_KEY: &str = "t";
const DURABLE_PREFIX: &str = "cauldron.msg";
const VOLATILE_PREFIX: &str = "cauldron.q0";
/// The header naming the node a message came from.
const ORIGIN: &str = "Cauldron-Node";
/// Messages waiting for the forwarder before the broker hands them over from tasks.
const TAP_CAPACITY: usize = 65_536;
/// How long the stream keeps a message: nodes read it within moments; one that was down
/// longer than this resumes with what is left.
const KEEP: Duration = Duration::from_secs(24 * 3600);
/// How long a node that joins waits for JetStream to be ready (see `patiently`).
const JOIN_PATIENCE: Duration = Duration::from_secs(30);
/// How long a new pull on the node's consumer may take before it is asked for again.
const REOPEN_BOUND: Duration = Duration::from_secs(2);
/// How long one pull request of a node's consumer waits for messages before it is renewed.
const PULL_EXPIRES: Duration = Duration::from_secs(5);

/// How a node joins the cluster (`--cluster`, `[cluster]`).
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterSpec {
    /// NATS servers, `nats://host:port` each.
    pub servers: Vec<String>,
    /// This node's name, unique in the cluster.
    pub node_id: String,
    /// Copies JetStream keeps of everything cauldron stores (3 for a 3-server NATS cluster).
    pub replicas: usize,
    /// A NATS credentials file (`.creds`), if the servers want one.
    pub credentials: Option<std::path::PathBuf>,
    /// CA certificates for `tls://` servers.
    pub ca_file: Option<std::path::PathBuf>,
}

#[derive(Debug, thiserror::Error)]
#[error("cluster: {0}")]
pub struct ClusterError(String);

/// Joins the cluster: connects to NATS, makes sure the stream and this node's consumer exist,
/// and starts forwarding both ways until `shutdown`.
pub async fn join(
    broker: &Arc<Broker>,
    spec: ClusterSpec,
    shutdown: CancellationToken,
) -> Result<(), ClusterError> {
    let mut options = async_nats::ConnectOptions::new()
        .name(format!("cauldron {}", spec.node_id))
        // Unreachable servers at start stop the start with that error; later losses reconnect.
        .connection_timeout(Duration::from_secs(5));
    if let Some(creds) = &spec.credentials {
        options = options
            .credentials_file(creds)
            .await
            .map_err(|e| ClusterError(format!("{}: {e}", creds.display())))?;
    }
    if let Some(ca) = &spec.ca_file {
        options = options.add_root_certificates(ca.clone()).require_tls(true);
    }
    let servers: Vec<async_nats::ServerAddr> = spec
        .servers
        .iter()
        .map(|s| s.parse().map_err(|e| ClusterError(format!("NATS server {s:?}: {e}"))))
        .collect::<Result<_, _>>()?;
    let client =
        options.connect(servers).await.map_err(|e| ClusterError(format!("connecting to NATS: {e}")))?;
    let js = jetstream::new(client.clone());
    let config = stream::Config {
        name: STREAM.into(),
        subjects: vec![format!("{DURABLE_PREFIX}.>")],
        num_replicas: spec.replicas,
        storage: stream::StorageType::File,
        max_age: KEEP,
        ..Default::default()
    };
    let stream = patiently(|| async {
        js.get_or_create_stream(config.clone())
            .await
            .map_err(|e| ClusterError(format!("stream {STREAM}: {e}")))
    })
    .await?;
    let durable = format!("node-{}", spec.node_id);
    // A pull waiting at a consumer's old leader is not moved to the new one: it would sit
    // until it expires. JetStream announces each election, and the node pulls anew on it.
    let elections = client
        .subscribe(format!("$JS.EVENT.ADVISORY.CONSUMER.LEADER_ELECTED.{STREAM}.{durable}"))
        .await
        .map_err(|e| ClusterError(format!("subscribing to JetStream's advisories: {e}")))?;
    let reader = Reader { stream, durable };
    let messages = patiently(|| reader.open()).await?;
    let (commands, loop_commands) = tokio::sync::mpsc::channel(64);
    let retained = patiently(|| retained_bucket(&js, spec.replicas)).await?;
    // Watching first, loading second: a change made while loading is not missed.
    let watch = patiently(|| async {
        retained.watch_all().await.map_err(|e| ClusterError(format!("watching {RETAINED}: {e}")))
    })
    .await?;
    load_retained(broker, &retained).await?;
    let volatile = client
        .subscribe(format!("{VOLATILE_PREFIX}.>"))
        .await
        .map_err(|e| ClusterError(format!("subscribing to {VOLATILE_PREFIX}.>: {e}")))?;
    let node: Arc<str> = spec.node_id.as_str().into();
    let groups = groups::Groups::start(client.clone(), reader.stream.clone(), broker, shutdown.clone());
    let registry = patiently(|| {
        sessions::Registry::start(
            &client,
            &js,
            broker,
            Arc::clone(&node),
            spec.replicas,
            sessions::Neighbours { commands: commands.clone(), groups: Arc::clone(&groups) },
            shutdown.clone(),
        )
    })
    .await?;
    broker.set_directory(registry);
    info!(node = %node, servers = ?spec.servers, "joined the cluster");
    broker.set_clustered();
    let tapped = broker.tap_everything(TAP_CAPACITY);
    tokio::spawn(follow_retained(Arc::clone(broker), watch, shutdown.clone()));
    tokio::spawn(forward(client, js, retained, tapped, Arc::clone(&node), shutdown.clone()));
    tokio::spawn(receive_stream(
        Arc::clone(broker),
        reader,
        messages,
        loop_commands,
        elections,
        Arc::clone(&node),
        shutdown.clone(),
    ));
    tokio::spawn(receive_volatile(Arc::clone(broker), volatile, node, shutdown));
    Ok(())
}

/// Runs a step of joining until it works or `JOIN_PATIENCE` is over: NATS servers started
/// together with the node may still be forming their JetStream cluster ("no suitable peers
/// for placement", no leader yet).
async fn patiently<T, F: std::future::Future<Output = Result<T, ClusterError>>>(
    mut step: impl FnMut() -> F,
) -> Result<T, ClusterError> {
    let deadline = tokio::time::Instant::now() + JOIN_PATIENCE;
    loop {
        match step().await {
            Ok(done) => return Ok(done),
            Err(e) if tokio::time::Instant::now() < deadline => {
                warn!("{e}; trying again");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

fn headers(node: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(ORIGIN, node);
    headers
}

/// Sends what this node's clients publish to the other nodes; a QoS 1/2 publisher's
/// acknowledgement waits for JetStream's.
async fn forward(
    client: async_nats::Client,
    js: jetstream::Context,
    retained: kv::Store,
    mut tapped: tokio::sync::mpsc::Receiver<Tapped>,
    node: Arc<str>,
    shutdown: CancellationToken,
) {
    loop {
        let message = tokio::select! {
            message = tapped.recv() => match message { Some(m) => m, None => return },
            _ = shutdown.cancelled() => return,
        };
        let payload: bytes::Bytes = record::to_bytes(&SourcedMessage::new(&message.message)).into();
        if message.message.retain {
            // In order, before the message itself: a subscriber that gets it can find it retained.
            if let Err(e) = keep_retained(&retained, &message.message, payload.clone()).await {
                message.done(Err(format!("the retained message was not stored in the cluster: {e}")));
                continue;
            }
        }
        if message.message.qos == cauldron_proto::QoS::AtMostOnce {
            let subject = subject::encode(VOLATILE_PREFIX, &message.message.topic);
            if let Err(e) = client.publish_with_headers(subject, headers(&node), payload).await {
                warn!("cluster: QoS 0 message not forwarded: {e}");
            }
            message.done(Ok(()));
            continue;
        }
        let subject = subject::encode(DURABLE_PREFIX, &message.message.topic);
        // Sent in order; the acknowledgements are awaited apart, so publishers are not
        // serialised behind each other's round trip.
        match js.publish_with_headers(subject, headers(&node), payload).await {
            Ok(ack) => {
                tokio::spawn(async move {
                    let stored =
                        ack.await.map(|_| ()).map_err(|e| format!("JetStream did not store it: {e}"));
                    message.done(stored);
                });
            }
            Err(e) => message.done(Err(format!("JetStream did not take it: {e}"))),
        }
    }
}

async fn retained_bucket(js: &jetstream::Context, replicas: usize) -> Result<kv::Store, ClusterError> {
    if let Ok(bucket) = js.get_key_value(RETAINED).await {
        return Ok(bucket);
    }
    let config = kv::Config {
        bucket: RETAINED.into(),
        history: 1,
        num_replicas: replicas,
        storage: stream::StorageType::File,
        ..Default::default()
    };
    js.create_key_value(config).await.map_err(|e| ClusterError(format!("bucket {RETAINED}: {e}")))
}

async fn keep_retained(
    bucket: &kv::Store,
    message: &Message,
    record: bytes::Bytes,
) -> Result<(), async_nats::Error> {
    let key = subject::encode(RETAINED_KEY, &message.topic);
    match message.payload.is_empty() {
        true => bucket.delete(key).await?,
        false => drop(bucket.put(key, record).await?),
    }
    Ok(())
}

/// The retained message an entry stands for: the stored one, or an empty one that removes it.
fn retained_of(entry: &kv::Entry) -> Option<Message> {
    let topic = subject::decode(RETAINED_KEY, &entry.key)?;
    match entry.operation {
        kv::Operation::Put => decode(&entry.value).ok().map(|mut m| {
            m.retain = true;
            m
        }),
        kv::Operation::Delete | kv::Operation::Purge => {
            Some(Message::new(topic.into(), bytes::Bytes::new(), cauldron_proto::QoS::AtMostOnce, true))
        }
    }
}

/// Every retained message the cluster has, into this node's store, before it serves.
async fn load_retained(broker: &Arc<Broker>, bucket: &kv::Store) -> Result<(), ClusterError> {
    let status = bucket.status().await.map_err(|e| ClusterError(format!("{RETAINED}: {e}")))?;
    if status.values() == 0 {
        return Ok(());
    }
    let mut keys = bucket.keys().await.map_err(|e| ClusterError(format!("{RETAINED}: {e}")))?;
    let mut loaded = 0;
    while let Some(key) = keys.next().await {
        let Ok(key) = key else { continue };
        if let Ok(Some(entry)) = bucket.entry(&key).await {
            if let Some(message) = retained_of(&entry) {
                drop(broker.retain_from_cluster(message));
                loaded += 1;
            }
        }
    }
    info!(loaded, "retained messages loaded from the cluster");
    Ok(())
}

/// Applies the bucket's changes (other nodes' retained messages) to this node's store.
async fn follow_retained(broker: Arc<Broker>, mut watch: kv::Watch, shutdown: CancellationToken) {
    loop {
        let entry = tokio::select! {
            entry = watch.next() => entry,
            _ = shutdown.cancelled() => return,
        };
        match entry {
            Some(Ok(entry)) => {
                if let Some(message) = retained_of(&entry) {
                    drop(broker.retain_from_cluster(message));
                }
            }
            Some(Err(e)) => warn!("cluster: following {RETAINED}: {e}"),
            None => return,
        }
    }
}

/// The message a cluster record carries, or why it cannot be read.
fn decode(payload: &[u8]) -> Result<Message, String> {
    let stored = SourcedMessage::decode(payload).map_err(|e| e.to_string())?;
    stored.restore().map_err(|e| e.to_string())
}

fn from_elsewhere(headers: Option<&HeaderMap>, node: &str) -> bool {
    headers.and_then(|h| h.get(ORIGIN)).is_none_or(|origin| origin.as_str() != node)
}

/// A pull on one of the stream's consumers. Short, with heartbeats: a pull the server lost (a
/// consumer whose leader is still being elected answers none) shows within seconds as missed
/// heartbeats and is made anew, not after async-nats' default 35 s.
async fn pull(consumer: &consumer::PullConsumer) -> Result<consumer::pull::Stream, consumer::StreamError> {
    consumer.stream().expires(PULL_EXPIRES).heartbeat(PULL_EXPIRES * 3 / 10).messages().await
}

/// This node's durable consumer of the stream, and how its messages are pulled.
struct Reader {
    stream: stream::Stream,
    durable: String,
}

impl Reader {
    /// The consumer (made if it is not there: a new node starts with what is published from now
    /// on; a known one resumes) and a pull on it.
    /// Also returns the consumer's acknowledgement floor: every message up to it was handled.
    async fn open(&self) -> Result<(consumer::pull::Stream, u64), ClusterError> {
        let config = consumer::pull::Config {
            durable_name: Some(self.durable.clone()),
            deliver_policy: consumer::DeliverPolicy::New,
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: Duration::from_secs(30),
            max_ack_pending: 10_000,
            ..Default::default()
        };
        let consumer: consumer::PullConsumer = self
            .stream
            .get_or_create_consumer(&self.durable, config)
            .await
            .map_err(|e| ClusterError(format!("consumer {}: {e}", self.durable)))?;
        let floor = consumer.cached_info().ack_floor.stream_sequence;
        let messages =
            pull(&consumer).await.map_err(|e| ClusterError(format!("reading {}: {e}", self.durable)))?;
        Ok((messages, floor))
    }

    /// A new pull after one that ended or stalled, retried until it is there.
    async fn reopen(&self, shutdown: &CancellationToken) -> Option<(consumer::pull::Stream, u64)> {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                _ = shutdown.cancelled() => return None,
            }
            // Bounded well below JetStream's request timeout: a request that reached a server
            // while the consumer had no leader goes unanswered, and a new one may find it.
            match tokio::time::timeout(REOPEN_BOUND, self.open()).await {
                Ok(Ok(messages)) => return Some(messages),
                Ok(Err(e)) => warn!("{e}"),
                Err(_) => warn!("cluster: consumer {}: no answer in {REOPEN_BOUND:?}", self.durable),
            }
        }
    }
}

/// Routes the stream's messages here, in order: those from other nodes to every subscription,
/// this node's own to its persistent sessions (see `handoff`); acknowledges each once what it
/// queued for persistent sessions is committed. Between messages, moves sessions in and out.
async fn receive_stream(
    broker: Arc<Broker>,
    reader: Reader,
    (mut messages, floor): (consumer::pull::Stream, u64),
    mut commands: tokio::sync::mpsc::Receiver<handoff::Command>,
    mut elections: async_nats::Subscriber,
    node: Arc<str>,
    shutdown: CancellationToken,
) {
    use consumer::pull::MessagesErrorKind as Kind;
    // Every message up to here was routed.
    let mut position = floor;
    loop {
        let next = tokio::select! {
            next = messages.next() => next,
            Some(command) = commands.recv() => {
                run(&broker, &reader.stream, command, position).await;
                continue;
            }
            Some(_) = elections.next() => {
                info!("cluster: the stream consumer {} has a new leader; pulling anew", reader.durable);
                None
            }
            _ = shutdown.cancelled() => return,
        };
        let message = match next {
            Some(Ok(message)) => message,
            Some(Err(e)) if matches!(e.kind(), Kind::Pull | Kind::Other) => {
                warn!("cluster: reading the stream: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            // The pull is stalled or over (no responders, missed heartbeats, the consumer gone):
            // only a new one reads on.
            end => {
                if let Some(Err(e)) = end {
                    warn!("cluster: reading the stream: {e}; pulling anew");
                }
                match reader.reopen(&shutdown).await {
                    Some((next, floor)) => {
                        messages = next;
                        position = position.max(floor);
                    }
                    None => return,
                }
                continue;
            }
        };
        let seq = message.info().map_or(0, |info| info.stream_sequence);
        match decode(&message.payload) {
            Ok(mut routed) => {
                routed.stream_seq = seq;
                let routed = match from_elsewhere(message.headers.as_ref(), &node) {
                    true => broker.publish_from_cluster(routed),
                    false => broker.publish_own_from_stream(routed),
                };
                if let Some(ticket) = routed.durable {
                    if let Ok(Err(e)) = ticket.await {
                        // Not acknowledged: JetStream delivers it again after its ack wait.
                        warn!("cluster: a message from the stream not stored here: {e}");
                        continue;
                    }
                }
            }
            Err(e) => warn!(subject = %message.subject, "cluster: unreadable message skipped: {e}"),
        }
        position = position.max(seq);
        if let Err(e) = message.ack().await {
            warn!("cluster: acknowledging to JetStream: {e}");
        }
    }
}

/// Does what the session registry asked of the stream loop, at `position`.
async fn run(broker: &Arc<Broker>, stream: &stream::Stream, command: handoff::Command, position: u64) {
    match command {
        handoff::Command::Export { session, reply } => {
            let _ = reply.send(handoff::export(&session, position));
        }
        handoff::Command::Adopt { client_id, parked, reply } => {
            let _ = reply.send(handoff::adopt(broker, stream, &client_id, &parked, position).await);
        }
    }
}

/// Routes QoS 0 messages from other nodes here.
async fn receive_volatile(
    broker: Arc<Broker>,
    mut volatile: async_nats::Subscriber,
    node: Arc<str>,
    shutdown: CancellationToken,
) {
    loop {
        let message = tokio::select! {
            message = volatile.next() => match message { Some(m) => m, None => return },
            _ = shutdown.cancelled() => return,
        };
        if !from_elsewhere(message.headers.as_ref(), &node) {
            continue;
        }
        match decode(&message.payload) {
            Ok(routed) => drop(broker.publish_from_cluster(routed)),
            Err(e) => warn!(subject = %message.subject, "cluster: unreadable message skipped: {e}"),
        }
    }
}
