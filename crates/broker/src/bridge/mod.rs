//! Bridges: this broker as a client of another one, relaying chosen topics either way
//! (Mosquitto's `connection` blocks).
//!
//! The local end is a session of this broker like any client's, named `local_clientid`: its
//! subscriptions are the outbound topics, its queue holds what waits for the remote, and it is
//! persistent, so queued QoS 1/2 messages are stored and outlive a remote that is down or a
//! restart. While the remote is connected the session is attached to the bridge task, which
//! drains it into the remote through the client crate and acknowledges each message locally
//! only once the remote has acknowledged it. The remote end is a `cauldron_client::Client`.

pub mod keys;
mod spec;

use std::future::poll_fn;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use cauldron_client::{Client, Messages, Options, Tls, TlsVersion};
use cauldron_proto::{
    ByteString, Packet, Properties, Protocol, Publish, QoS, RetainHandling, SubOptions, Subscription,
};
use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::time::{sleep, Instant};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

pub use spec::{BridgeSpec, BridgeTls, Direction, Restart, StartType, TopicRule};

use crate::authz::ClientInfo;
use crate::broker::Broker;
use crate::message::Message;
use crate::session::{next_connection_id, Doorbell, Outgoing, Session, SessionHandle};

/// Messages taken from the local queue per turn.
const DRAIN_BUDGET: usize = 64;

/// What `/metrics` shows of a bridge.
#[derive(Default)]
pub struct BridgeStatus {
    pub name: String,
    pub connected: AtomicBool,
    /// Messages brought in from the remote and published here.
    pub messages_in: AtomicU64,
    /// Messages the remote took (acknowledged, for QoS 1 and 2).
    pub messages_out: AtomicU64,
    /// Connections made to the remote after the first.
    pub reconnects: AtomicU64,
    session: Mutex<Option<Arc<SessionHandle>>>,
}

impl BridgeStatus {
    /// Messages waiting in the local queue for the remote, sent or not.
    pub fn queued(&self) -> usize {
        let session = self.session.lock().unwrap_or_else(|e| e.into_inner()).clone();
        session.map_or(0, |s| s.read(|state| state.queued() + state.inflight()))
    }
}

/// Builds the client TLS settings of a bridge; an unreadable file stops the start.
pub fn client_tls(tls: &BridgeTls) -> Result<Tls, String> {
    let mut files = Vec::new();
    files.extend(tls.cafile.clone());
    if let Some(dir) = &tls.capath {
        let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let mut found: Vec<_> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "pem" || x == "crt"))
            .collect();
        found.sort();
        files.extend(found);
    }
    let files: Vec<&std::path::Path> = files.iter().map(|p| p.as_path()).collect();
    let identity = tls.certfile.as_deref().zip(tls.keyfile.as_deref());
    let version = match tls.version.as_deref() {
        None => TlsVersion::Any,
        Some("tlsv1.2") => TlsVersion::Tls12,
        Some("tlsv1.3") => TlsVersion::Tls13,
        Some(other) => return Err(format!("bridge_tls_version {other:?}: expected tlsv1.2 or tlsv1.3")),
    };
    Tls::trusting(&files, identity, !tls.insecure, version)
}

/// Starts a bridge; it runs until `shutdown` (`Broker::bridges_stopped` waits for it). `tls`
/// is the client TLS made by `client_tls`.
pub fn start(broker: &Arc<Broker>, spec: BridgeSpec, tls: Option<Tls>, shutdown: CancellationToken) {
    let status = Arc::new(BridgeStatus { name: spec.name.clone(), ..BridgeStatus::default() });
    let local = ClientInfo {
        client_id: spec.local_clientid.as_str().into(),
        username: spec.local_username.as_deref().map(Into::into),
    };
    let bridge = Bridge {
        broker: Arc::clone(broker),
        spec: Arc::new(spec),
        tls,
        status: Arc::clone(&status),
        shutdown,
        local,
    };
    // Before any listener serves a client: what is published from the first moment waits in
    // the bridge's session for the remote, and is not dropped for want of a subscriber.
    let session = bridge.open_local(bridge.spec.local_clean());
    broker.add_bridge(status, tokio::spawn(bridge.run(session)));
}

struct Bridge {
    broker: Arc<Broker>,
    spec: Arc<BridgeSpec>,
    tls: Option<Tls>,
    status: Arc<BridgeStatus>,
    shutdown: CancellationToken,
    /// Who the bridge is here (`local_clientid`, `local_username`): the ACL's client and the
    /// publisher of what it brings in, made once rather than per message.
    local: ClientInfo,
}

/// Why a connection to the remote ended.
enum Ended {
    Shutdown,
    Lost,
    /// `lazy`: quiet for `idle_timeout`.
    Idle,
}

impl Bridge {
    async fn run(self, session: Arc<SessionHandle>) {
        let spec = &self.spec;
        *self.status.session.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::clone(&session));
        self.notify_local(false);
        let (mut failures, mut address, mut connections) = (0u32, 0usize, 0u64);
        loop {
            if spec.start == StartType::Lazy && !self.wait_for_threshold(&session).await {
                break;
            }
            let target = &spec.addresses[address % spec.addresses.len()];
            let connected = tokio::select! {
                connected = self.connect(target, &session) => connected,
                _ = self.shutdown.cancelled() => break,
            };
            match connected {
                Ok((client, messages, link)) => {
                    info!(bridge = %spec.name, remote = %target, "Connected to bridge remote.");
                    failures = 0;
                    connections += 1;
                    if connections > 1 {
                        self.status.reconnects.fetch_add(1, Ordering::Relaxed);
                    }
                    let ended = self.serve(&session, client, messages, link).await;
                    if matches!(ended, Ended::Shutdown) {
                        break;
                    }
                    info!(bridge = %spec.name, remote = %target, "Bridge connection ended.");
                    // Round robin goes on to the next address; otherwise the first is preferred.
                    address = if spec.round_robin { address + 1 } else { 0 };
                    if matches!(ended, Ended::Idle) {
                        continue;
                    }
                }
                Err(e) => {
                    warn!(bridge = %spec.name, remote = %target, "Bridge connection failed: {e}");
                    failures += 1;
                    address += 1;
                }
            }
            if spec.start == StartType::Once {
                break;
            }
            let wait = spec.restart.delay(failures.max(1));
            tokio::select! {
                _ = sleep(wait) => {}
                _ = self.shutdown.cancelled() => break,
            }
        }
    }

    /// Opens the bridge's session here (resuming it unless `clean`); it never expires.
    fn open_local(&self, clean: bool) -> Arc<SessionHandle> {
        let client_id = ByteString::from(self.spec.local_clientid.as_str());
        let (session, _) = self.broker.open_session(&client_id, clean);
        session.edit(|state| state.set_expiry_interval(u32::MAX));
        // From the start, so what is published before the remote answers waits for it.
        subscribe_local(&self.broker, &session, &self.spec, false);
        session
    }

    /// `lazy`: waits until `threshold` messages are queued. False on shutdown.
    async fn wait_for_threshold(&self, session: &SessionHandle) -> bool {
        loop {
            if session.read(Session::queued) >= self.spec.threshold {
                return true;
            }
            tokio::select! {
                _ = sleep(Duration::from_millis(250)) => {}
                _ = self.shutdown.cancelled() => return false,
            }
        }
    }

    /// Connects to the remote and subscribes there. Packet ids towards the remote are the
    /// local session's, one sequence for every packet, as a Mosquitto bridge numbers them: a
    /// message left unacknowledged goes again with its id after a reconnect [MQTT-4.4.0-1].
    async fn connect(
        &self,
        address: &str,
        session: &Arc<SessionHandle>,
    ) -> Result<(Client, Messages, LocalLink), cauldron_client::Error> {
        let spec = &self.spec;
        let address = match address.rsplit_once(':') {
            Some((_, port)) if port.parse::<u16>().is_ok() => address.to_string(),
            _ => format!("{address}:{}", if self.tls.is_some() { 8883 } else { 1883 }),
        };
        let mut options = Options::new(address, spec.remote_clientid.as_str())
            .protocol(spec.protocol)
            .clean_start(spec.clean_session)
            .keep_alive(spec.keep_alive);
        options.bridge = spec.try_private && !spec.protocol.is_v5();
        options.username = spec.remote_username.as_deref().map(Into::into);
        options.password = spec.remote_password.clone().map(|p| p.into_bytes().into());
        if spec.notifications && !spec.notifications_local_only {
            // The remote says the bridge is gone when it goes without a word.
            options = options.will(spec.state_topic(), "0", QoS::AtLeastOnce, true);
        }
        if spec.protocol.is_v5() {
            options.properties = Properties {
                session_expiry_interval: spec.session_expiry_interval,
                // What this broker lets any client have in flight towards it, as Mosquitto.
                receive_maximum: spec
                    .receive_maximum
                    .or(Some(self.broker.config.max_inflight_messages.clamp(1, 65_535) as u16)),
                maximum_packet_size: spec.max_packet_size,
                ..Properties::default()
            };
        }
        if let Some(tls) = &self.tls {
            options = options.tls(tls.clone());
        }
        // Detached again when dropped: on a failure here, or when shutdown cancels the attempt.
        let mut link = LocalLink::attach(&self.broker, session, spec);
        let (client, messages) = Client::connect(options).await?;
        link.connected(&client);
        self.subscribe_remote(&client, session).await?;
        Ok((client, messages, link))
    }

    /// Announces the bridge at the remote and subscribes there.
    async fn subscribe_remote(
        &self,
        client: &Client,
        session: &SessionHandle,
    ) -> Result<(), cauldron_client::Error> {
        let spec = &self.spec;
        let v5 = spec.protocol.is_v5();
        // As a Mosquitto bridge: the state first, then one SUBSCRIBE per topic, all at once.
        if spec.notifications && !spec.notifications_local_only {
            drop(client.publish_with_id(state_message(spec, session, true)).await?);
        }
        let mut answers = Vec::new();
        for rule in &spec.topics {
            if !rule.direction.inbound() && !spec.attempt_unsubscribe {
                continue;
            }
            let (id, _) = session.edit(Session::reserve_packet_id);
            let filter = ByteString::from(rule.remote_filter());
            if rule.direction.inbound() {
                let options = SubOptions {
                    qos: rule.qos,
                    // An MQTT 5 remote is asked not to echo; a 3.x one knows from try_private.
                    no_local: v5 && spec.try_private,
                    retain_as_published: v5,
                    retain_handling: RetainHandling::OnSubscribe,
                };
                let subscription = vec![Subscription { filter: filter.clone(), options }];
                answers
                    .push((filter, client.subscribe_with_id(id, subscription, Properties::default()).await?));
            } else {
                drop(client.unsubscribe_with_id(id, vec![filter]).await?);
            }
        }
        let bridge = spec.name.clone();
        tokio::spawn(async move {
            for (filter, answer) in answers {
                if let Ok(codes) = answer.await {
                    if let Some(code) = codes.into_iter().find(|c| c.is_error()) {
                        warn!(%bridge, %filter, ?code, "the remote refused a bridge subscription");
                    }
                }
            }
        });
        Ok(())
    }

    /// Relays both ways while the remote is connected.
    async fn serve(
        &self,
        session: &Arc<SessionHandle>,
        client: Client,
        mut messages: Messages,
        mut link: LocalLink,
    ) -> Ended {
        let spec = &self.spec;
        self.status.connected.store(true, Ordering::Relaxed);
        self.notify_local(true);
        let mut inflight = FuturesUnordered::new();
        let mut last_traffic = Instant::now();
        let ended = loop {
            let mut lost = false;
            for publish in link.drain(&self.broker) {
                let (local_id, qos) = (publish.packet_id, publish.qos);
                match client.publish_with_id(publish).await {
                    Ok(answer) => inflight.push(async move { (local_id, qos, answer.await) }),
                    Err(_) => lost = true,
                }
            }
            if lost {
                break Ended::Lost;
            }
            let idle = async {
                match spec.start {
                    StartType::Lazy => tokio::time::sleep_until(last_traffic + spec.idle_timeout).await,
                    _ => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = self.shutdown.cancelled() => break Ended::Shutdown,
                rung = link.rung() => {
                    if rung & (Doorbell::KICK | Doorbell::SHUTDOWN) != 0 {
                        // Shutdown, or another connection took the bridge's client id.
                        break if rung & Doorbell::SHUTDOWN != 0 { Ended::Shutdown } else { Ended::Lost };
                    }
                }
                message = messages.recv() => match message {
                    Some(publish) => {
                        last_traffic = Instant::now();
                        self.bring_in(publish);
                    }
                    None => break Ended::Lost,
                },
                Some((local_id, qos, result)) = inflight.next() => match result {
                    Ok(reason) if reason.is_none_or(|r| !r.is_error()) => {
                        last_traffic = Instant::now();
                        self.status.messages_out.fetch_add(1, Ordering::Relaxed);
                        link.acknowledge(local_id, qos);
                    }
                    Ok(reason) => {
                        // Refused by the remote (not authorised, say): retrying would not help.
                        warn!(bridge = %spec.name, ?reason, "the remote refused a bridged message");
                        link.acknowledge(local_id, qos);
                    }
                    // Connection lost: what is unacknowledged is sent again on the next one.
                    Err(_) => break Ended::Lost,
                },
                _ = idle => break Ended::Idle,
            }
        };
        self.status.connected.store(false, Ordering::Relaxed);
        drop(link);
        if spec.notifications {
            self.notify_local(false);
        }
        if !matches!(ended, Ended::Lost) {
            drop(inflight);
            if spec.notifications && !spec.notifications_local_only {
                if let Ok(answer) = client.publish_with_id(state_message(spec, session, false)).await {
                    let _ = tokio::time::timeout(Duration::from_secs(1), answer).await;
                }
            }
            let _ = client.disconnect().await;
        }
        ended
    }

    /// A message from the remote, published here under its local topic as the bridge's local
    /// user would publish it.
    fn bring_in(&self, mut publish: Publish) {
        let rules = self.spec.topics.iter().filter(|rule| rule.direction.inbound());
        let Some((rule, topic)) =
            rules.into_iter().find_map(|rule| rule.to_local(&publish.topic).map(|t| (rule, t)))
        else {
            debug!(bridge = %self.spec.name, topic = %publish.topic, "message matches no inbound topic, dropped");
            return;
        };
        let authorizer = self.broker.authorizer();
        if !authorizer.allows_everything() && !authorizer.can_publish(&self.local, &topic) {
            debug!(bridge = %self.spec.name, %topic, "bridged message not authorised here, dropped");
            return;
        }
        publish.topic = topic.into();
        publish.qos = publish.qos.min(rule.qos);
        (publish.packet_id, publish.dup) = (None, false);
        self.status.messages_in.fetch_add(1, Ordering::Relaxed);
        // The bridge's own client id as publisher: its No Local subscriptions do not send the
        // message straight back.
        let mut message = Message::from_publish(publish, Some(self.local.client_id.clone()));
        message.publisher_user = self.local.username.clone().filter(|_| message.retain);
        drop(self.broker.publish(message).durable);
    }

    /// The connection state, retained here: `1` connected, `0` not.
    fn notify_local(&self, connected: bool) {
        if !self.spec.notifications {
            return;
        }
        let payload = if connected { "1" } else { "0" };
        let message = Message::new(self.spec.state_topic().into(), payload.into(), QoS::AtLeastOnce, true);
        drop(self.broker.publish(message).durable);
    }
}

/// Subscribes the bridge's session to the outbound topics; with `retained`, the retained
/// messages there are queued for the remote too.
fn subscribe_local(broker: &Broker, session: &Arc<SessionHandle>, spec: &BridgeSpec, retained: bool) {
    // A stored session keeps the topics of an earlier configuration: those go.
    let current: Vec<&str> =
        spec.topics.iter().filter(|rule| rule.direction.outbound()).map(|rule| rule.local_filter()).collect();
    let stale: Vec<ByteString> = session.read(|state| {
        state.subscriptions().keys().filter(|f| !current.contains(&f.as_ref())).cloned().collect()
    });
    for filter in stale {
        broker.unsubscribe(session, &filter);
    }
    for rule in spec.topics.iter().filter(|rule| rule.direction.outbound()) {
        let options = SubOptions {
            qos: rule.qos,
            no_local: true,
            retain_as_published: spec.outgoing_retain,
            retain_handling: RetainHandling::OnSubscribe,
        };
        let subscription = Subscription { filter: rule.local_filter().into(), options };
        let (_, messages, _) = broker.subscribe(session, &subscription, None);
        for delivery in messages.into_iter().filter(|_| retained) {
            session.deliver(delivery);
        }
    }
}

/// The connection state for the remote, retained, with a packet id from the local session.
fn state_message(spec: &BridgeSpec, session: &SessionHandle, connected: bool) -> Publish {
    let mut publish = Publish::new(spec.state_topic(), if connected { "1" } else { "0" });
    (publish.qos, publish.retain) = (QoS::AtLeastOnce, true);
    publish.packet_id = Some(session.edit(Session::reserve_packet_id).0);
    publish
}

/// The bridge's session while the remote is connected: attached as a connection would be, and
/// detached when dropped.
struct LocalLink {
    broker: Arc<Broker>,
    session: Arc<SessionHandle>,
    id: u64,
    doorbell: Arc<Doorbell>,
    spec: Arc<BridgeSpec>,
    /// Messages unacknowledged from the previous connection, sent first.
    resend: Vec<Packet>,
}

impl LocalLink {
    /// Attaches the bridge to its session while it connects: from here on, what is published
    /// (QoS 0 too) waits in the queue for the remote instead of being dropped as for an
    /// offline client.
    fn attach(broker: &Arc<Broker>, session: &Arc<SessionHandle>, spec: &Arc<BridgeSpec>) -> LocalLink {
        let id = next_connection_id();
        let doorbell = Arc::new(Doorbell::default());
        session.set_connection(id, Arc::clone(&doorbell));
        session.edit(|state| {
            state.attach(id, Protocol::V5, usize::MAX);
            state.set_expiry_interval(u32::MAX);
        });
        session.set_online(true);
        session.set_username(spec.local_username.as_deref().map(Into::into));
        LocalLink {
            broker: Arc::clone(broker),
            session: Arc::clone(session),
            id,
            doorbell,
            spec: Arc::clone(spec),
            resend: Vec::new(),
        }
    }

    /// The remote answered: the window is what it takes (its Receive Maximum) and this broker
    /// allows, and what the last connection left unacknowledged goes first.
    fn connected(&mut self, client: &Client) {
        let window = client
            .connected()
            .properties
            .receive_maximum
            .map_or(usize::from(u16::MAX), usize::from)
            .min(self.broker.config.max_inflight_messages.max(1));
        self.resend = self.session.edit(|state| state.attach(self.id, Protocol::V5, window)).0;
        // Subscribing again each time queues the retained messages for the remote, as
        // Mosquitto does when a bridge connects.
        subscribe_local(&self.broker, &self.session, &self.spec, true);
    }

    /// Resolves with what the doorbell was rung for.
    async fn rung(&self) -> u8 {
        poll_fn(|cx| match self.doorbell.take(cx) {
            0 => Poll::Pending,
            rung => Poll::Ready(rung),
        })
        .await
    }

    /// The messages to send now, as far as the window allows, with their packet ids (those
    /// resent from an earlier connection with DUP set).
    fn drain(&mut self, broker: &Broker) -> Vec<Publish> {
        let mut packets: Vec<Packet> = std::mem::take(&mut self.resend);
        let mut outgoing = Vec::new();
        let (((produced, expired, too_large), room_freed), _) = self
            .session
            .edit(|state| (state.drain_into(self.id, &mut outgoing, DRAIN_BUDGET), state.take_room_freed()));
        if room_freed {
            self.session.notify_room();
        }
        crate::metrics::add(&broker.metrics.traffic().messages_sent, produced as u64);
        broker.metrics.dropped_for(crate::metrics::DropReason::Expired, expired);
        broker.metrics.dropped_for(crate::metrics::DropReason::TooLarge, too_large);
        packets.extend(outgoing.into_iter().flat_map(Outgoing::into_packets));
        let mut out = Vec::with_capacity(packets.len());
        for packet in packets {
            let mut publish = match packet {
                Packet::Publish(publish) => publish,
                // Released before a restart: the remote had completed it.
                Packet::PubRel(ack) => {
                    self.session.edit(|state| state.on_pubcomp(ack.packet_id));
                    continue;
                }
                _ => continue,
            };
            let Some(topic) = self
                .spec
                .topics
                .iter()
                .filter(|r| r.direction.outbound())
                .find_map(|r| r.to_remote(&publish.topic))
            else {
                // Queued under a topic rule no longer configured: done here, so it does not
                // hold a place in the window for ever.
                self.acknowledge(publish.packet_id, publish.qos);
                continue;
            };
            publish.topic = topic.into();
            publish.retain &= self.spec.outgoing_retain;
            publish.properties.subscription_identifiers.clear();
            out.push(publish);
        }
        out
    }

    /// The remote has the message: it is done here too (QoS 2 both steps at once, as the
    /// remote's PUBCOMP already came).
    fn acknowledge(&mut self, local_id: Option<u16>, qos: QoS) {
        let Some(packet_id) = local_id else { return };
        self.session.edit(|state| match qos {
            QoS::AtLeastOnce => {
                state.on_puback(packet_id);
            }
            _ => {
                let _ = state.on_pubrec(packet_id, false);
                state.on_pubcomp(packet_id);
            }
        });
    }
}

impl Drop for LocalLink {
    fn drop(&mut self) {
        self.broker.close_session(&self.session, self.id);
    }
}
