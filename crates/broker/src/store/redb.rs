//! The redb store: one file, crash-safe commits (copy-on-write B-trees with a checksummed
//! commit slot), four tables. A file that cannot be opened or read is moved aside and the broker
//! starts empty rather than not at all.

use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use tracing::error;

use super::{Op, Snapshot, Store, StoreError};

const RETAINED: TableDefinition<&str, &[u8]> = TableDefinition::new("retained");
const SESSIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("sessions");
const DELIVERIES: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("deliveries");
const INBOUND_QOS2: TableDefinition<(&str, u16), ()> = TableDefinition::new("inbound_qos2");

pub struct RedbStore {
    db: Database,
}

fn io(e: impl std::fmt::Display) -> StoreError {
    StoreError::Io(e.to_string())
}

impl RedbStore {
    /// Opens (or creates) the store at `path` and reads it. A file that fails to open or to
    /// read is renamed to `<path>.corrupt-<unix time>` with a loud error, and a fresh store is
    /// started in its place. Returns the store, its contents, and the quarantined file if any.
    pub fn open(path: &Path) -> Result<(RedbStore, Snapshot, Option<PathBuf>), StoreError> {
        match RedbStore::try_open(path) {
            Ok((store, snapshot)) => Ok((store, snapshot, None)),
            Err(e) => {
                let stamp = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_secs();
                let aside = PathBuf::from(format!("{}.corrupt-{stamp}", path.display()));
                std::fs::rename(path, &aside).map_err(io)?;
                error!(
                    file = %path.display(),
                    quarantined = %aside.display(),
                    error = %e,
                    "DATA FILE UNREADABLE: moved aside; starting with an empty store"
                );
                let (store, snapshot) = RedbStore::try_open(path)?;
                Ok((store, snapshot, Some(aside)))
            }
        }
    }

    fn try_open(path: &Path) -> Result<(RedbStore, Snapshot), StoreError> {
        let db = Database::create(path).map_err(io)?;
        let mut store = RedbStore { db };
        store.commit(&[])?; // creates the tables on a new file
        let snapshot = store.load()?;
        Ok((store, snapshot))
    }
}

impl Store for RedbStore {
    fn load(&mut self) -> Result<Snapshot, StoreError> {
        let txn = self.db.begin_read().map_err(io)?;
        let mut snapshot = Snapshot::default();
        for item in txn.open_table(RETAINED).map_err(io)?.iter().map_err(io)? {
            let (k, v) = item.map_err(io)?;
            snapshot.retained.push((k.value().to_string(), v.value().to_vec()));
        }
        for item in txn.open_table(SESSIONS).map_err(io)?.iter().map_err(io)? {
            let (k, v) = item.map_err(io)?;
            snapshot.sessions.push((k.value().to_string(), v.value().to_vec()));
        }
        for item in txn.open_table(DELIVERIES).map_err(io)?.iter().map_err(io)? {
            let (k, v) = item.map_err(io)?;
            let (client, seq) = k.value();
            snapshot.deliveries.push((client.to_string(), seq, v.value().to_vec()));
        }
        for item in txn.open_table(INBOUND_QOS2).map_err(io)?.iter().map_err(io)? {
            let (k, _) = item.map_err(io)?;
            let (client, id) = k.value();
            snapshot.inbound_qos2.push((client.to_string(), id));
        }
        Ok(snapshot)
    }

    fn commit(&mut self, ops: &[Op]) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(io)?;
        {
            let mut retained = txn.open_table(RETAINED).map_err(io)?;
            let mut sessions = txn.open_table(SESSIONS).map_err(io)?;
            let mut deliveries = txn.open_table(DELIVERIES).map_err(io)?;
            let mut inbound = txn.open_table(INBOUND_QOS2).map_err(io)?;
            for op in ops {
                match op {
                    Op::PutRetained(topic, value) => {
                        retained.insert(topic.as_str(), value.as_slice()).map_err(io)?;
                    }
                    Op::DeleteRetained(topic) => {
                        retained.remove(topic.as_str()).map_err(io)?;
                    }
                    Op::PutSession(client, value) => {
                        sessions.insert(client.as_str(), value.as_slice()).map_err(io)?;
                    }
                    Op::DeleteSession(client) => {
                        sessions.remove(client.as_str()).map_err(io)?;
                        let client = client.as_str();
                        deliveries.retain_in((client, 0)..=(client, u64::MAX), |_, _| false).map_err(io)?;
                        inbound.retain_in((client, 0)..=(client, u16::MAX), |_, _| false).map_err(io)?;
                    }
                    Op::PutDelivery(client, seq, value) => {
                        deliveries.insert((client.as_str(), *seq), value.as_slice()).map_err(io)?;
                    }
                    Op::DeleteDelivery(client, seq) => {
                        deliveries.remove((client.as_str(), *seq)).map_err(io)?;
                    }
                    Op::PutInboundQos2(client, id) => {
                        inbound.insert((client.as_str(), *id), ()).map_err(io)?;
                    }
                    Op::DeleteInboundQos2(client, id) => {
                        inbound.remove((client.as_str(), *id)).map_err(io)?;
                    }
                }
            }
        }
        txn.commit().map_err(io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ops_survive_reopening_and_delete_session_takes_its_rows() {
        let dir = std::env::temp_dir().join(format!("cauldron-redb-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("state.redb");
        let _ = std::fs::remove_file(&path);
        {
            let (mut store, snapshot, quarantined) = RedbStore::open(&path).unwrap();
            assert!(snapshot.sessions.is_empty() && quarantined.is_none());
            store
                .commit(&[
                    Op::PutRetained("t".into(), vec![1]),
                    Op::PutSession("a".into(), vec![2]),
                    Op::PutDelivery("a".into(), 1, vec![3]),
                    Op::PutDelivery("ab".into(), 1, vec![4]),
                    Op::PutInboundQos2("a".into(), 7),
                ])
                .unwrap();
            store.commit(&[Op::DeleteSession("a".into())]).unwrap();
        }
        let (_, snapshot, _) = RedbStore::open(&path).unwrap();
        assert_eq!(snapshot.retained, [("t".to_string(), vec![1])]);
        assert!(snapshot.sessions.is_empty());
        assert_eq!(
            snapshot.deliveries,
            [("ab".to_string(), 1, vec![4])],
            "only the other client's row is left"
        );
        assert!(snapshot.inbound_qos2.is_empty());

        std::fs::write(&path, b"this is not a database").unwrap();
        let (_, snapshot, quarantined) = RedbStore::open(&path).unwrap();
        assert!(snapshot.retained.is_empty());
        let aside = quarantined.expect("garbage quarantined");
        assert_eq!(std::fs::read(&aside).unwrap(), b"this is not a database");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
