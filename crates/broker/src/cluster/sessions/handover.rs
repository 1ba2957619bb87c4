//! A session handed from the node its client left, still connected, to the node it came to.

use std::sync::Arc;

use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{Registry, ASK_BOUND, HANDOVER_WAIT};
use crate::cluster::handoff::{self, Holder};
use crate::cluster::subject;
use crate::session::SessionHandle;
use crate::store::record;

impl Registry {
    /// Gives a session whose client connected to another node (`holder`, at `revision`) to that
    /// node, exactly as it stands: its connection here stops delivering, the stream loop
    /// exports it, the connection closes, and the export goes into the new holder's entry.
    pub(super) async fn hand_over(
        self: Arc<Self>,
        key: String,
        revision: u64,
        holder: Holder,
        session: Arc<SessionHandle>,
        connection: u64,
    ) {
        session.fence(connection);
        let parked = self.export(&session).await;
        if let Some(broker) = self.broker.upgrade() {
            broker.taken_over_elsewhere(&session.client_id, connection);
        }
        let Ok(parked) = parked else { return };
        let handed = Holder { session: Some(parked), handed_over: true, ..holder };
        // Only onto that claim: if anything was written since, the new node went on without.
        match self.bucket.update(&key, record::to_bytes(&handed).into(), revision).await {
            Ok(_) => info!("cluster: session of {} handed over to node {}", session.client_id, handed.node),
            Err(e) => warn!("cluster: session of {} not handed over: {e}", session.client_id),
        }
    }

    /// Whether `node` is there to answer: false only when NATS knows nobody listens for it
    /// (the node is gone); a node that is slow or paused counts as there.
    pub(super) async fn answers(&self, node: &str) -> bool {
        let asked =
            tokio::time::timeout(ASK_BOUND, self.client.request(alive_subject(node), "".into())).await;
        !matches!(asked, Ok(Err(e)) if e.kind() == async_nats::RequestErrorKind::NoResponders)
    }

    /// The session the node that held it hands to `connection`, if it does within
    /// `HANDOVER_WAIT` (a dead or paused node does not; the last checkpoint serves then).
    pub(super) async fn handed_over(&self, key: &str, connection: u64) -> Option<handoff::Parked> {
        let deadline = tokio::time::Instant::now() + HANDOVER_WAIT;
        loop {
            let handed = self.handed.notified();
            tokio::pin!(handed);
            handed.as_mut().enable();
            {
                let mut handovers = self.handovers.lock().unwrap_or_else(|e| e.into_inner());
                if handovers.get(key).is_some_and(|(c, _)| *c == connection) {
                    return handovers.remove(key).map(|(_, parked)| parked);
                }
            }
            if tokio::time::timeout_at(deadline, handed).await.is_err() {
                return None;
            }
        }
    }
}

/// The subject a node answers on while it runs.
pub(super) fn alive_subject(node: &str) -> String {
    subject::encode("cauldron.node", node) + ".alive"
}

/// Answers whoever asks whether this node runs.
pub(super) async fn answer(
    client: async_nats::Client,
    mut asked: async_nats::Subscriber,
    shutdown: CancellationToken,
) {
    loop {
        let question = tokio::select! {
            question = asked.next() => match question { Some(q) => q, None => return },
            _ = shutdown.cancelled() => return,
        };
        if let Some(reply) = question.reply {
            let _ = client.publish(reply, "".into()).await;
        }
    }
}
