//! Start-up: rebuild retained messages, sessions, subscriptions, queues and QoS 2 state from a
//! store snapshot, before any listener opens.

use std::collections::HashMap;
use std::sync::Arc;

use cauldron_proto::ByteString;
use tracing::{info, warn};

use super::{lock, Broker};
use crate::router::Entry;
use crate::store::record::from_bytes;
use crate::store::{Snapshot, StoreError, StoredDelivery, StoredMessage, StoredSession};

impl Broker {
    pub(super) fn restore(&self, snapshot: Snapshot) -> Result<(), StoreError> {
        let now = std::time::Instant::now();
        let mut retained = lock!(self.retained.write());
        for (_, bytes) in &snapshot.retained {
            let message = from_bytes::<StoredMessage>(bytes)?.restore()?;
            if !message.is_expired(now) {
                retained.set(&Arc::new(message));
            }
        }
        drop(retained);

        let mut deliveries: HashMap<&str, Vec<_>> = HashMap::new();
        for (client, seq, bytes) in &snapshot.deliveries {
            let stored: StoredDelivery = from_bytes(bytes)?;
            deliveries.entry(client.as_str()).or_default().push((*seq, stored.restore(*seq)?, stored.state));
        }
        let mut inbound: HashMap<&str, Vec<u16>> = HashMap::new();
        for (client, id) in &snapshot.inbound_qos2 {
            inbound.entry(client.as_str()).or_default().push(*id);
        }

        let mut sessions = lock!(self.sessions.lock());
        let mut router = lock!(self.router.write());
        for (client, bytes) in &snapshot.sessions {
            let record: StoredSession = from_bytes(bytes)?;
            let client_id = ByteString::from(client.as_str());
            let handle = self.new_session(&client_id);
            {
                let mut state = handle.lock();
                let queued = deliveries.remove(client.as_str()).unwrap_or_default();
                state.restore(&record, queued, inbound.remove(client.as_str()).unwrap_or_default())?;
                for (filter, (options, id)) in &state.subscriptions {
                    let entry =
                        Entry { session: Arc::clone(&handle), options: *options, subscription_id: *id };
                    router.insert(filter, entry);
                }
            }
            sessions.insert(client_id, handle);
        }
        for client in deliveries.keys() {
            warn!(client, "stored messages without a stored session ignored");
        }
        info!(
            sessions = sessions.len(),
            subscriptions = router.len(),
            retained = snapshot.retained.len(),
            queued = snapshot.deliveries.len(),
            "state restored from the store"
        );
        Ok(())
    }
}
