//! Start-up: rebuild retained messages, sessions, subscriptions, queues and QoS 2 state from a
//! store snapshot, before any listener opens.

use std::collections::HashMap;
use std::sync::Arc;

use std::fmt::Write as _;

use cauldron_proto::ByteString;
use tracing::{error, info, warn};

use super::{lock, Broker};
use crate::router::Entry;
use crate::store::record::from_bytes;
use crate::store::{Snapshot, StoreError, StoredDelivery, StoredMessage, StoredSession};

/// Stored records that could not be restored. One bad record never keeps the broker from
/// starting: it is logged, written to a file beside the store with its bytes, and the rest is
/// restored.
#[derive(Default)]
struct Rejected(String);

impl Rejected {
    fn keep(&mut self, table: &str, key: &str, bytes: &[u8], e: &StoreError) {
        error!(table, key, error = %e, "STORED RECORD UNREADABLE: left out of the restored state");
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let _ = writeln!(self.0, "{table}\t{key:?}\t{e}\t{hex}");
    }

    /// Writes what was rejected to `<dir>/rejected-records-<unix time>.tsv`.
    fn save(self, dir: &std::path::Path) {
        if self.0.is_empty() {
            return;
        }
        let stamp =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs();
        let path = dir.join(format!("rejected-records-{stamp}.tsv"));
        match std::fs::write(&path, self.0) {
            Ok(()) => error!(file = %path.display(), "unreadable stored records kept aside"),
            Err(e) => error!(file = %path.display(), error = %e, "could not keep unreadable records aside"),
        }
    }
}

impl Broker {
    pub(super) fn restore(&self, snapshot: Snapshot) -> Result<(), StoreError> {
        let now = std::time::Instant::now();
        let mut rejected = Rejected::default();
        let mut retained = lock!(self.retained.write());
        for (topic, bytes) in &snapshot.retained {
            match from_bytes::<StoredMessage>(bytes).and_then(|m| m.restore()) {
                Ok(message) if !message.is_expired(now) => retained.set(&Arc::new(message)),
                Ok(_) => {}
                Err(e) => rejected.keep("retained", topic, bytes, &e),
            }
        }
        drop(retained);

        let mut deliveries: HashMap<&str, Vec<_>> = HashMap::new();
        for (client, seq, bytes) in &snapshot.deliveries {
            let restored = from_bytes::<StoredDelivery>(bytes).and_then(|d| Ok((d.restore(*seq)?, d.state)));
            match restored {
                Ok((delivery, state)) => {
                    deliveries.entry(client.as_str()).or_default().push((*seq, delivery, state))
                }
                Err(e) => rejected.keep("deliveries", &format!("{client}/{seq}"), bytes, &e),
            }
        }
        let mut inbound: HashMap<&str, Vec<u16>> = HashMap::new();
        for (client, id) in &snapshot.inbound_qos2 {
            inbound.entry(client.as_str()).or_default().push(*id);
        }

        let mut sessions = lock!(self.sessions.lock());
        let mut router = lock!(self.router.write());
        for (client, bytes) in &snapshot.sessions {
            let record: StoredSession = match from_bytes(bytes) {
                Ok(record) => record,
                Err(e) => {
                    rejected.keep("sessions", client, bytes, &e);
                    continue;
                }
            };
            let client_id = ByteString::from(client.as_str());
            let handle = self.new_session(&client_id);
            {
                let mut state = handle.lock();
                let queued = deliveries.remove(client.as_str()).unwrap_or_default();
                if let Err(e) =
                    state.restore(&record, queued, inbound.remove(client.as_str()).unwrap_or_default())
                {
                    rejected.keep("sessions", client, bytes, &e);
                    continue;
                }
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
        rejected.save(&self.config.data_dir);
        Ok(())
    }
}
