//! Shared subscriptions across nodes: each message to one member of a group, wherever its
//! members are connected. A group (`$share/<group>/<filter>`) has one durable JetStream consumer
//! on the stream, filtered to its filter, that every node with a member pulls from: JetStream
//! gives each QoS 1/2 message to one of them, and that node to one of its members. QoS 0 goes
//! the same way through a NATS queue group. So consumers grow with share groups, never with
//! members or subscriptions. A node takes part from the first SUBSCRIBE of a member there (SUBACK
//! waits until it pulls) and stops a moment after its last member left; the consumer goes once
//! no node has pulled from it for `IDLE`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use async_nats::jetstream::{consumer, stream, AckKind};
use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{decode, subject, DURABLE_PREFIX, VOLATILE_PREFIX};
use crate::broker::Broker;

/// How long a group's consumer outlives the last node pulling from it.
const IDLE: Duration = Duration::from_secs(300);
/// How often a node looks for groups it no longer has members of.
const PRUNE: Duration = Duration::from_secs(2);
/// How long a message this node could not place waits before JetStream offers it again.
const RETRY: Duration = Duration::from_secs(1);

pub(super) struct Groups {
    client: async_nats::Client,
    stream: stream::Stream,
    broker: Weak<Broker>,
    /// The groups this node pulls for, by their `$share/...` filter.
    running: Mutex<HashMap<String, CancellationToken>>,
    shutdown: CancellationToken,
}

impl Groups {
    pub(super) fn start(
        client: async_nats::Client,
        stream: stream::Stream,
        broker: &Arc<Broker>,
        shutdown: CancellationToken,
    ) -> Arc<Groups> {
        let groups = Arc::new(Groups {
            client,
            stream,
            broker: Arc::downgrade(broker),
            running: Mutex::default(),
            shutdown,
        });
        tokio::spawn(Arc::clone(&groups).prune());
        groups
    }

    fn running(&self) -> std::sync::MutexGuard<'_, HashMap<String, CancellationToken>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// This node pulls for the group `filter` from now on (made if it is the group's first).
    pub(super) async fn join(self: Arc<Self>, filter: String) -> Result<(), String> {
        if self.running().contains_key(&filter) {
            return Ok(());
        }
        let Some(Ok((_, path))) = cauldron_proto::topic::parse_shared(&filter) else {
            return Err(format!("not a shared subscription: {filter}"));
        };
        let name = format!("share-{:016x}", fnv1a(filter.as_bytes()));
        let config = consumer::pull::Config {
            durable_name: Some(name.clone()),
            filter_subjects: subject::filters(DURABLE_PREFIX, path),
            deliver_policy: consumer::DeliverPolicy::New,
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: Duration::from_secs(30),
            inactive_threshold: IDLE,
            ..Default::default()
        };
        let consumer: consumer::PullConsumer = self
            .stream
            .get_or_create_consumer(&name, config)
            .await
            .map_err(|e| format!("consumer {name}: {e}"))?;
        let mut volatile = Vec::new();
        for subject in subject::filters(VOLATILE_PREFIX, path) {
            let sub = self.client.queue_subscribe(subject, name.clone()).await.map_err(|e| e.to_string())?;
            volatile.push(sub);
        }
        let token = self.shutdown.child_token();
        {
            let mut running = self.running();
            if running.contains_key(&filter) {
                return Ok(());
            }
            running.insert(filter.clone(), token.clone());
        }
        for sub in volatile {
            tokio::spawn(Arc::clone(&self).read_volatile(filter.clone(), sub, token.clone()));
        }
        tokio::spawn(self.read(filter, consumer, token));
        Ok(())
    }

    /// The group's QoS 1/2 messages that JetStream gives this node, each to one member here;
    /// one with no member here any more goes back to JetStream for another node.
    async fn read(
        self: Arc<Self>,
        filter: String,
        consumer: consumer::PullConsumer,
        token: CancellationToken,
    ) {
        let mut messages = None;
        loop {
            let pull = match &mut messages {
                Some(pull) => pull,
                None => match super::pull(&consumer).await {
                    Ok(pull) => messages.insert(pull),
                    Err(e) => {
                        warn!("cluster: reading the group {filter}: {e}");
                        tokio::select! {
                            _ = tokio::time::sleep(Duration::from_millis(500)) => continue,
                            _ = token.cancelled() => return,
                        }
                    }
                },
            };
            let next = tokio::select! {
                next = pull.next() => next,
                _ = token.cancelled() => return,
            };
            let message = match next {
                Some(Ok(message)) => message,
                Some(Err(e)) => {
                    warn!("cluster: reading the group {filter}: {e}; pulling anew");
                    messages = None;
                    continue;
                }
                None => {
                    messages = None;
                    continue;
                }
            };
            let Some(broker) = self.broker.upgrade() else { return };
            let placed = match decode(&message.payload) {
                Ok(mut routed) => {
                    routed.stream_seq = message.info().map_or(0, |i| i.stream_sequence);
                    broker.deliver_to_group(&filter, routed)
                }
                Err(e) => {
                    warn!("cluster: unreadable message skipped: {e}");
                    Some(None)
                }
            };
            let ack = match placed {
                None => AckKind::Nak(Some(RETRY)),
                Some(Some(ticket)) => match ticket.await {
                    Ok(Ok(())) => AckKind::Ack,
                    _ => AckKind::Nak(Some(RETRY)),
                },
                Some(None) => AckKind::Ack,
            };
            if let Err(e) = message.ack_with(ack).await {
                warn!("cluster: acknowledging to JetStream: {e}");
            }
        }
    }

    /// The group's QoS 0 messages NATS gives this node, each to one member here.
    async fn read_volatile(
        self: Arc<Self>,
        filter: String,
        mut sub: async_nats::Subscriber,
        token: CancellationToken,
    ) {
        loop {
            let message = tokio::select! {
                message = sub.next() => match message { Some(m) => m, None => return },
                _ = token.cancelled() => return,
            };
            let Some(broker) = self.broker.upgrade() else { return };
            if let Ok(routed) = decode(&message.payload) {
                drop(broker.deliver_to_group(&filter, routed));
            }
        }
    }

    /// Stops pulling for groups with no member here any more.
    async fn prune(self: Arc<Self>) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(PRUNE) => {}
                _ = self.shutdown.cancelled() => return,
            }
            let Some(broker) = self.broker.upgrade() else { return };
            self.running().retain(|filter, token| {
                let members = broker.has_group_member(filter);
                if !members {
                    info!("cluster: no member of {filter} here any more; leaving the group");
                    token.cancel();
                }
                members
            });
        }
    }
}

/// A consumer name for a group that every node computes the same (FNV-1a, 64 bits).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}
