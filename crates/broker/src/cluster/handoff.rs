//! Persistent sessions moving between nodes. A node's persistent sessions take their QoS 1 and 2
//! messages from the cluster's stream, in its order, so "every message up to stream position
//! `p` was routed to this session" is a fact a node can state. A session leaves a node as a
//! [`Parked`] record (its subscriptions, that position, and what it still owes its client) in
//! the session registry, and a node adopting it replays the stream from that position on.
//! Both happen in the node's stream loop, between two messages, where the position is exact.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{consumer, stream};
use cauldron_proto::{ByteString, QoS};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use tracing::{info, warn};

use crate::broker::Broker;
use crate::session::{Delivery, SessionHandle};
use crate::store::{DeliveryState, StoredDelivery, StoredMessage, StoredSession, Ticket};

/// How long a replay waits for the stream's next message before it gives up on the rest.
const REPLAY_STALL: Duration = Duration::from_secs(10);

/// A client id's entry in the session registry.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Holder {
    pub node: String,
    pub connection: u64,
    /// The connection is live (else the session is parked, waiting for its client).
    pub online: bool,
    /// The connection asked to resume the session (clean start 0).
    pub resume: bool,
    /// The node that held the session last wrote it here for this connection to adopt.
    pub handed_over: bool,
    /// The persistent session as of its last checkpoint (online) or as it was parked.
    pub session: Option<Parked>,
    /// The connection's will, for another node to publish if this one dies.
    pub will: Option<Parting>,
}

/// A will as the registry keeps it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Parting {
    pub message: StoredMessage,
    /// Will Delay Interval, seconds.
    pub delay: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Parked {
    pub record: StoredSession,
    /// Every stream message up to this sequence was routed to the session: delivered, or in
    /// `owed`.
    pub position: u64,
    pub owed: Vec<Owed>,
}

/// A message the session still owes its client.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) enum Owed {
    /// A message of the stream, by sequence.
    Stream { seq: u64, qos: u8, retain: bool, subscription_ids: Vec<u32>, state: DeliveryState },
    /// Any other (a retained message sent on subscribe), whole.
    Whole { message: StoredMessage, delivery: StoredDelivery },
}

/// Asked of a node's stream loop.
pub(super) enum Command {
    /// The session as it stands at the loop's position.
    Export { session: Arc<SessionHandle>, reply: oneshot::Sender<Parked> },
    /// Takes the session on, replaying the stream from where it was parked to the loop's
    /// position (the loop routes what follows).
    Adopt { client_id: ByteString, parked: Box<Parked>, reply: oneshot::Sender<Result<(), String>> },
}

impl Parked {
    pub(super) fn expired(&self) -> bool {
        let now = crate::store::record::wall_ms(std::time::Instant::now());
        self.record.expires_at_ms.is_some_and(|at| at <= now)
    }
}

/// The session at stream position `position`.
pub(super) fn export(session: &SessionHandle, position: u64) -> Parked {
    let (owed, record) = session.read(|state| (state.owed(), state.record()));
    let owed = owed
        .into_iter()
        .map(|(delivery, state)| match delivery.message.stream_seq {
            0 => Owed::Whole {
                message: StoredMessage::new(&delivery.message),
                delivery: StoredDelivery::new(&delivery, state),
            },
            seq => Owed::Stream {
                seq,
                qos: delivery.qos as u8,
                retain: delivery.retain,
                subscription_ids: delivery.subscription_ids.into_vec(),
                state,
            },
        })
        .collect();
    Parked { record, position, owed }
}

/// Takes `parked` on as `client_id`'s session here, with the stream's messages after its
/// position up to `position` replayed into it.
pub(super) async fn adopt(
    broker: &Arc<Broker>,
    stream: &stream::Stream,
    client_id: &ByteString,
    parked: &Parked,
    position: u64,
) -> Result<(), String> {
    let mut owed = Vec::new();
    for entry in &parked.owed {
        match entry {
            Owed::Stream { seq, qos, retain, subscription_ids, state } => {
                let Some(message) = stream_message(stream, *seq).await else { continue };
                let qos = QoS::from_u8(*qos).map_err(|e| e.to_string())?;
                let delivery = Delivery {
                    message: Arc::new(message),
                    qos,
                    retain: *retain,
                    subscription_ids: subscription_ids.as_slice().into(),
                    shared: None,
                    seq: 0,
                };
                owed.push((delivery, *state));
            }
            Owed::Whole { message, delivery } => {
                let message = Arc::new(message.restore().map_err(|e| e.to_string())?);
                let state = delivery.state;
                owed.push((delivery.clone().restore(message, 0).map_err(|e| e.to_string())?, state));
            }
        }
    }
    let (session, ticket) = broker.adopt_session(client_id, &parked.record, owed)?;
    let mut tickets: Vec<Ticket> = ticket.into_iter().collect();
    let mut read = 0;
    if parked.position < position {
        let config = consumer::pull::OrderedConfig {
            deliver_policy: consumer::DeliverPolicy::ByStartSequence { start_sequence: parked.position + 1 },
            ..Default::default()
        };
        let consumer = stream.create_consumer(config).await.map_err(|e| format!("replay: {e}"))?;
        if consumer.cached_info().num_pending > 0 {
            let mut messages = consumer.messages().await.map_err(|e| format!("replay: {e}"))?;
            loop {
                let next = tokio::time::timeout(REPLAY_STALL, messages.next()).await;
                let message = match next {
                    Ok(Some(Ok(message))) => message,
                    Ok(Some(Err(e))) => return Err(format!("replay: {e}")),
                    Ok(None) | Err(_) => return Err("replay: the stream stopped answering".into()),
                };
                let (seq, pending) = match message.info() {
                    Ok(info) => (info.stream_sequence, info.pending),
                    Err(e) => return Err(format!("replay: {e}")),
                };
                if seq > position {
                    break;
                }
                match super::decode(&message.payload) {
                    Ok(mut routed) => {
                        routed.stream_seq = seq;
                        tickets.extend(broker.deliver_replayed(&session, routed));
                        read += 1;
                    }
                    Err(e) => warn!(seq, "cluster: unreadable message skipped in a replay: {e}"),
                }
                if seq == position || pending == 0 {
                    break;
                }
            }
        }
    }
    for ticket in tickets {
        if let Ok(Err(e)) = ticket.await {
            return Err(format!("storing the session here: {e}"));
        }
    }
    info!(client = %client_id, from = parked.position, to = position, read, "cluster: session resumed here");
    Ok(())
}

/// The stream's message `seq`, if the stream still has it.
async fn stream_message(stream: &stream::Stream, seq: u64) -> Option<crate::message::Message> {
    let raw = match stream.get_raw_message(seq).await {
        Ok(raw) => raw,
        Err(e) => {
            warn!(seq, "cluster: a message a session owed is gone from the stream: {e}");
            return None;
        }
    };
    match super::decode(&raw.payload) {
        Ok(mut message) => {
            message.stream_seq = seq;
            Some(message)
        }
        Err(e) => {
            warn!(seq, "cluster: unreadable message a session owed skipped: {e}");
            None
        }
    }
}
