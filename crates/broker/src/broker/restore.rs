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
use crate::store::record::{LegacyDelivery, SourcedMessage};
use crate::store::{Blob, Op, Snapshot, StoreError, StoredDelivery, StoredMessage, StoredSession};

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
    /// Returns the store operations that write deliveries of the older shape in the new one, for
    /// the caller to commit before the broker serves anyone.
    pub(super) fn restore(&self, snapshot: Snapshot) -> Result<Vec<Op>, StoreError> {
        let now = std::time::Instant::now();
        let mut rejected = Rejected::default();
        let mut retained = lock!(self.retained.write());
        for (topic, bytes) in &snapshot.retained {
            match SourcedMessage::decode(bytes).and_then(|m| m.restore()) {
                Ok(message) if !message.is_expired(now) => retained.set(&Arc::new(message)),
                Ok(_) => {}
                Err(e) => rejected.keep("retained", topic, bytes, &e),
            }
        }
        drop(retained);

        // Each stored message is read once and shared by every delivery that refers to it.
        let mut messages = HashMap::new();
        for (id, bytes) in snapshot.messages {
            let blob = Arc::new(Blob::stored(id, bytes));
            match from_bytes::<StoredMessage>(&blob.bytes).and_then(|m| m.restore()) {
                Ok(message) => drop(messages.insert(id, Arc::new(message.restored_from(blob)))),
                Err(e) => rejected.keep("messages", &id.to_string(), &blob.bytes, &e),
            }
        }
        let mut deliveries: HashMap<&str, Vec<_>> = HashMap::new();
        for (client, seq, message, bytes) in &snapshot.deliveries {
            let key = || format!("{client}/{seq}");
            let Some(message) = messages.get(message) else {
                let e = StoreError::Corrupt(format!("message {message} is not stored"));
                rejected.keep("queued", &key(), bytes, &e);
                continue;
            };
            let restored = from_bytes::<StoredDelivery>(bytes)
                .and_then(|d| Ok((d.state, d.restore(Arc::clone(message), *seq)?)));
            match restored {
                Ok((state, delivery)) => {
                    deliveries.entry(client.as_str()).or_default().push((*seq, delivery, state))
                }
                Err(e) => rejected.keep("queued", &key(), bytes, &e),
            }
        }
        // Deliveries in the shape before the messages table are taken in, and written again
        // in the new shape once their session is restored.
        let mut legacy: HashMap<&str, Vec<u64>> = HashMap::new();
        for (client, seq, bytes) in &snapshot.legacy_deliveries {
            let restored = from_bytes::<LegacyDelivery>(bytes).and_then(|d| Ok((d.state, d.restore(*seq)?)));
            match restored {
                Ok((state, delivery)) => {
                    deliveries.entry(client.as_str()).or_default().push((*seq, delivery, state));
                    legacy.entry(client.as_str()).or_default().push(*seq);
                }
                Err(e) => rejected.keep("deliveries", &format!("{client}/{seq}"), bytes, &e),
            }
        }
        for queue in deliveries.values_mut() {
            queue.sort_by_key(|(seq, ..)| *seq);
        }
        let mut rewritten = Vec::new();
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
                    // Its deliveries stay stored, for whoever recovers the record.
                    deliveries.remove(client.as_str());
                    legacy.remove(client.as_str());
                    continue;
                }
            };
            let client_id = ByteString::from(client.as_str());
            let handle = self.new_session(&client_id);
            let queued = deliveries.remove(client.as_str()).unwrap_or_default();
            let inbound = inbound.remove(client.as_str()).unwrap_or_default();
            let older_shape = legacy.remove(client.as_str());
            // Deliveries of the older shape are journalled again here; their old rows go after
            // (`rewritten`), once these are written.
            let (restored, _) = handle.edit(|state| {
                state.restore(&record, queued, inbound)?;
                if older_shape.is_some() {
                    state.journal_deliveries();
                }
                for (filter, (options, id)) in state.subscriptions() {
                    let entry =
                        Entry { session: Arc::clone(&handle), options: *options, subscription_id: *id };
                    router.insert(filter, entry);
                }
                Ok::<_, StoreError>(())
            });
            if let Err(e) = restored {
                rejected.keep("sessions", client, bytes, &e);
                continue;
            }
            let old_rows = older_shape.unwrap_or_default().into_iter();
            rewritten.extend(old_rows.map(|seq| Op::DeleteLegacyDelivery(client.clone(), seq)));
            sessions.insert(handle);
        }
        // Deliveries of a session that is not stored at all (left by a version that journalled
        // for a session already ended): nobody will take them, so they leave the store.
        for (client, orphans) in deliveries {
            warn!(client, count = orphans.len(), "stored messages without a stored session removed");
            let legacy = legacy.remove(client).unwrap_or_default();
            for (seq, delivery, _) in orphans {
                rewritten.push(match legacy.contains(&seq) {
                    true => Op::DeleteLegacyDelivery(client.to_string(), seq),
                    false => Op::DeleteDelivery {
                        client: client.to_string(),
                        seq,
                        message: delivery.message.stored().id,
                    },
                });
            }
        }
        info!(
            sessions = sessions.len(),
            subscriptions = router.len(),
            retained = snapshot.retained.len(),
            queued = snapshot.deliveries.len() + snapshot.legacy_deliveries.len(),
            messages = messages.len(),
            "state restored from the store"
        );
        rejected.save(&self.config.data_dir);
        Ok(rewritten)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use cauldron_proto::{Publish, QoS};

    use crate::authz::AllowAll;
    use crate::broker::Broker;
    use crate::config::Config;
    use crate::message::Message;
    use crate::store::record::{to_bytes, StoredSession};
    use crate::store::{DeliveryState, Durability, Op, RedbStore, Store, StoredMessage};

    /// A store written before the messages table: its deliveries are restored, in order, and
    /// written again in the new shape, one message row each, the old rows gone.
    #[test]
    fn deliveries_of_the_older_shape_are_restored_and_rewritten() {
        let dir = std::env::temp_dir().join(format!("cauldron-legacy-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("state.redb");
        let old = |payload: &'static str, state| {
            let mut publish = Publish::new("t", payload.as_bytes());
            publish.qos = QoS::AtLeastOnce;
            let message = StoredMessage::new(&Message::from_publish(publish, Some("pub".into())));
            // The old record: the message, then qos, retain, subscription ids, shared, state.
            to_bytes(&(message, 1u8, false, vec![7u32], None::<String>, state))
        };
        crate::store::write_legacy_deliveries(
            &path,
            &[
                ("phone", 1, old("first", DeliveryState::Queued)),
                ("phone", 2, old("second", DeliveryState::Queued)),
                ("broken", 1, old("kept", DeliveryState::Queued)),
            ],
        );
        let record = StoredSession {
            expiry_interval: u32::MAX,
            expires_at_ms: None,
            subscriptions: vec![],
            pending_will: None,
        };
        {
            let (mut store, _, _) = RedbStore::open(&path).unwrap();
            // "broken"'s record is unreadable: its delivery stays as it is, for whoever mends it.
            let garbage = Op::PutSession("broken".into(), vec![0xff; 3]);
            store.commit(&[Op::PutSession("phone".into(), to_bytes(&record)), garbage]).unwrap();
        }
        let config = Config { data_dir: dir.clone(), ..Config::default() };
        let (store, snapshot, _) = RedbStore::open(&path).unwrap();
        assert_eq!(snapshot.legacy_deliveries.len(), 3);
        let broker =
            Broker::open(config, Arc::new(AllowAll), Box::new(store), snapshot, Durability::Sync).unwrap();
        let (session, present) = broker.open_session(&"phone".into(), false);
        assert!(present);
        let queued: Vec<_> = session.read(|s| s.owed()).into_iter().map(|(d, _)| d).collect();
        let payloads: Vec<_> = queued.iter().map(|d| d.message.payload.clone()).collect();
        assert_eq!(payloads, ["first", "second"]);
        assert_eq!(&*queued[0].subscription_ids, [7]);
        broker.close_store();
        drop(broker);

        let (_, snapshot, _) = RedbStore::open(&path).unwrap();
        let left: Vec<_> = snapshot.legacy_deliveries.iter().map(|(c, seq, _)| (c.as_str(), *seq)).collect();
        assert_eq!(left, [("broken", 1)], "phone's old rows are gone, the unreadable session's stay");
        assert_eq!(snapshot.deliveries.len(), 2);
        assert_eq!(snapshot.messages.len(), 2, "one row per message");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
