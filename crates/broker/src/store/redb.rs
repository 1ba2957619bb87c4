//! The redb store: one file, crash-safe commits (copy-on-write B-trees with a checksummed
//! commit slot). Tables: retained messages, sessions, messages queued for persistent sessions,
//! the deliveries that refer to them, QoS 2 receive state. A file that cannot be opened or
//! read is moved aside and the broker starts empty rather than not at all.

use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use tracing::error;

use super::{Blob, Op, Snapshot, Store, StoreError};

const RETAINED: TableDefinition<&str, &[u8]> = TableDefinition::new("retained");
const SESSIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("sessions");
/// Queued and in-flight deliveries: (message id, client, seq) -> `StoredDelivery`. Keyed by
/// message first, so the rows of one fan-out sit side by side: a publish queued for a hundred
/// sessions rewrites a leaf or two, not one per session.
const QUEUED: TableDefinition<(u64, &str, u64), &[u8]> = TableDefinition::new("queued");
/// Messages by id: a row lives while a delivery in `QUEUED` refers to it.
const MESSAGES: TableDefinition<u64, &[u8]> = TableDefinition::new("messages");
/// Deliveries with their message inside, as written before the messages table: read at
/// start-up, written again in the new shape and removed.
const DELIVERIES: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("deliveries");
const INBOUND_QOS2: TableDefinition<(&str, u16), ()> = TableDefinition::new("inbound_qos2");

pub struct RedbStore {
    /// `None` only between closing and reopening the file (see `reopen`).
    db: Option<Database>,
    path: PathBuf,
}

fn io(e: impl std::fmt::Display) -> StoreError {
    StoreError::Io(e.to_string())
}

/// Why the file could not be opened: only `Corrupt` is a reason to move it aside.
enum OpenError {
    Corrupt(String),
    /// Locked by another process, no permission, a full disk...: the data may be fine, so
    /// nothing is touched and the start stops.
    Other(String),
}

impl From<redb::DatabaseError> for OpenError {
    fn from(e: redb::DatabaseError) -> OpenError {
        match e {
            redb::DatabaseError::Storage(s) => s.into(),
            redb::DatabaseError::DatabaseAlreadyOpen | redb::DatabaseError::LockProtocolMismatch => {
                OpenError::Other(format!("{e}: is another cauldron running on this data directory?"))
            }
            e => OpenError::Other(e.to_string()),
        }
    }
}

impl From<redb::StorageError> for OpenError {
    fn from(e: redb::StorageError) -> OpenError {
        use std::io::ErrorKind::{InvalidData, UnexpectedEof};
        match &e {
            redb::StorageError::Corrupted(_) => OpenError::Corrupt(e.to_string()),
            redb::StorageError::Io(io) if matches!(io.kind(), InvalidData | UnexpectedEof) => {
                OpenError::Corrupt(e.to_string())
            }
            _ => OpenError::Other(e.to_string()),
        }
    }
}

impl RedbStore {
    /// Opens (or creates) the store at `path` and reads it. A corrupt file (checksums, structure,
    /// or a panic inside redb while reading it) is renamed to `<path>.corrupt-<unix time>` with
    /// a loud error, and a fresh store is started in its place. Any other failure (the file is
    /// locked by another process, unreadable for permissions, the disk is full) leaves the file
    /// alone and is returned as an error: the broker must not start. Returns the store, its
    /// contents, and the quarantined file if any.
    pub fn open(path: &Path) -> Result<(RedbStore, Snapshot, Option<PathBuf>), StoreError> {
        match RedbStore::try_open(path) {
            Ok((store, snapshot)) => Ok((store, snapshot, None)),
            Err(OpenError::Other(e)) => Err(StoreError::Io(e)),
            Err(OpenError::Corrupt(e)) => {
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
                    "DATA FILE CORRUPT: moved aside; starting with an empty store"
                );
                let (store, snapshot) = RedbStore::try_open(path).map_err(|e| match e {
                    OpenError::Corrupt(e) | OpenError::Other(e) => StoreError::Io(e),
                })?;
                Ok((store, snapshot, Some(aside)))
            }
        }
    }

    fn try_open(path: &Path) -> Result<(RedbStore, Snapshot), OpenError> {
        // redb has been seen to panic on garbage in the middle of a file; that is corruption
        // too, not a reason to abort the process.
        let attempt = std::panic::catch_unwind(|| -> Result<(RedbStore, Snapshot), OpenError> {
            let db = Database::create(path)?;
            let mut store = RedbStore { db: Some(db), path: path.to_path_buf() };
            store.create_tables()?;
            let snapshot = store.read_all()?;
            Ok((store, snapshot))
        });
        attempt.unwrap_or_else(|panic| {
            let why = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()));
            Err(OpenError::Corrupt(format!("redb panicked reading the file: {}", why.unwrap_or_default())))
        })
    }

    fn create_tables(&mut self) -> Result<(), OpenError> {
        let txn = self.db()?.begin_write().map_err(|e| OpenError::Other(e.to_string()))?;
        for result in [
            txn.open_table(RETAINED).map(drop),
            txn.open_table(SESSIONS).map(drop),
            txn.open_table(DELIVERIES).map(drop),
            txn.open_table(QUEUED).map(drop),
            txn.open_table(MESSAGES).map(drop),
            txn.open_table(INBOUND_QOS2).map(drop),
        ] {
            result.map_err(table_error)?;
        }
        txn.commit().map_err(|e| match e {
            redb::CommitError::Storage(s) => s.into(),
            e => OpenError::Other(e.to_string()),
        })
    }

    /// Everything stored, with each failure classified.
    fn read_all(&mut self) -> Result<Snapshot, OpenError> {
        self.load().map_err(|e| match e {
            // `load` reports storage failures as I/O strings; anything that fails while reading
            // a file that opened is taken for damage in it.
            StoreError::Io(e) | StoreError::Corrupt(e) => OpenError::Corrupt(e),
            StoreError::Stopped => OpenError::Other("stopped".into()),
        })
    }
}

impl RedbStore {
    fn db(&self) -> Result<&Database, StoreError> {
        self.db.as_ref().ok_or_else(|| StoreError::Io(format!("{} is not open", self.path.display())))
    }
}

impl From<StoreError> for OpenError {
    fn from(e: StoreError) -> OpenError {
        OpenError::Other(e.to_string())
    }
}

fn table_error(e: redb::TableError) -> OpenError {
    match e {
        redb::TableError::Storage(s) => s.into(),
        e => OpenError::Corrupt(e.to_string()),
    }
}

impl Store for RedbStore {
    fn load(&mut self) -> Result<Snapshot, StoreError> {
        let txn = self.db()?.begin_read().map_err(io)?;
        let mut snapshot = Snapshot::default();
        for item in txn.open_table(RETAINED).map_err(io)?.iter().map_err(io)? {
            let (k, v) = item.map_err(io)?;
            snapshot.retained.push((k.value().to_string(), v.value().to_vec()));
        }
        for item in txn.open_table(SESSIONS).map_err(io)?.iter().map_err(io)? {
            let (k, v) = item.map_err(io)?;
            snapshot.sessions.push((k.value().to_string(), v.value().to_vec()));
        }
        for item in txn.open_table(MESSAGES).map_err(io)?.iter().map_err(io)? {
            let (k, v) = item.map_err(io)?;
            snapshot.messages.push((k.value(), v.value().to_vec()));
        }
        for item in txn.open_table(QUEUED).map_err(io)?.iter().map_err(io)? {
            let (k, v) = item.map_err(io)?;
            let (message, client, seq) = k.value();
            snapshot.deliveries.push((client.to_string(), seq, message, v.value().to_vec()));
        }
        for item in txn.open_table(DELIVERIES).map_err(io)?.iter().map_err(io)? {
            let (k, v) = item.map_err(io)?;
            let (client, seq) = k.value();
            snapshot.legacy_deliveries.push((client.to_string(), seq, v.value().to_vec()));
        }
        for item in txn.open_table(INBOUND_QOS2).map_err(io)?.iter().map_err(io)? {
            let (k, _) = item.map_err(io)?;
            let (client, id) = k.value();
            snapshot.inbound_qos2.push((client.to_string(), id));
        }
        Ok(snapshot)
    }

    /// redb refuses every write after an I/O error (a full disk) until the file is opened
    /// again; this closes and reopens it, so freeing space is enough to recover.
    fn reopen(&mut self) -> Result<(), StoreError> {
        drop(self.db.take());
        self.db = Some(Database::create(&self.path).map_err(io)?);
        Ok(())
    }

    fn commit(&mut self, ops: &[Op]) -> Result<(), StoreError> {
        let txn = self.db()?.begin_write().map_err(io)?;
        {
            let mut retained = txn.open_table(RETAINED).map_err(io)?;
            let mut sessions = txn.open_table(SESSIONS).map_err(io)?;
            let mut legacy = txn.open_table(DELIVERIES).map_err(io)?;
            let mut inbound = txn.open_table(INBOUND_QOS2).map_err(io)?;
            let mut queued = Queued {
                deliveries: txn.open_table(QUEUED).map_err(io)?,
                messages: txn.open_table(MESSAGES).map_err(io)?,
            };
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
                        legacy.retain_in((client, 0)..=(client, u64::MAX), |_, _| false).map_err(io)?;
                        inbound.retain_in((client, 0)..=(client, u16::MAX), |_, _| false).map_err(io)?;
                    }
                    Op::PutDelivery { client, seq, message, record } => {
                        queued.put(client, *seq, message, record)?;
                    }
                    Op::DeleteDelivery { client, seq, message } => queued.remove(*message, client, *seq)?,
                    Op::DeleteLegacyDelivery(client, seq) => {
                        legacy.remove((client.as_str(), *seq)).map_err(io)?;
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

/// Writes deliveries in the shape before the messages table, as an older cauldron did.
#[cfg(test)]
pub(crate) fn write_legacy_deliveries(path: &Path, rows: &[(&str, u64, Vec<u8>)]) {
    let db = Database::create(path).unwrap();
    let txn = db.begin_write().unwrap();
    {
        let mut table = txn.open_table(DELIVERIES).unwrap();
        for (client, seq, bytes) in rows {
            table.insert((*client, *seq), bytes.as_slice()).unwrap();
        }
    }
    txn.commit().unwrap();
}

/// The deliveries and messages tables inside one commit, kept in step: a message row lives as
/// long as a delivery refers to it.
struct Queued<'txn> {
    deliveries: redb::Table<'txn, (u64, &'static str, u64), &'static [u8]>,
    messages: redb::Table<'txn, u64, &'static [u8]>,
}

impl Queued<'_> {
    fn put(&mut self, client: &str, seq: u64, message: &Blob, record: &[u8]) -> Result<(), StoreError> {
        if self.messages.get(message.id).map_err(io)?.is_none() {
            self.messages.insert(message.id, message.bytes.as_slice()).map_err(io)?;
        }
        self.deliveries.insert((message.id, client, seq), record).map_err(io)?;
        Ok(())
    }

    /// Removes a delivery; the last one of its message takes the message with it.
    fn remove(&mut self, message: u64, client: &str, seq: u64) -> Result<(), StoreError> {
        if self.deliveries.remove((message, client, seq)).map_err(io)?.is_none() {
            return Ok(());
        }
        let mut left = self.deliveries.range((message, "", 0)..(message + 1, "", 0)).map_err(io)?;
        if left.next().is_none() {
            drop(left);
            self.messages.remove(message).map_err(io)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// An empty directory of this test's own and the store path in it.
    fn fresh(name: &str) -> (PathBuf, PathBuf) {
        let dir = std::env::temp_dir().join(format!("cauldron-redb-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("state.redb");
        (dir, path)
    }

    fn put(client: &str, seq: u64, message: &Arc<Blob>, record: u8) -> Op {
        Op::PutDelivery { client: client.into(), seq, message: Arc::clone(message), record: vec![record] }
    }

    #[test]
    fn ops_survive_reopening_and_delete_session_takes_its_rows() {
        let (dir, path) = fresh("ops");
        let message = Arc::new(Blob::stored(5, vec![9]));
        {
            let (mut store, snapshot, quarantined) = RedbStore::open(&path).unwrap();
            assert!(snapshot.sessions.is_empty() && quarantined.is_none());
            store
                .commit(&[
                    Op::PutRetained("t".into(), vec![1]),
                    Op::PutSession("a".into(), vec![2]),
                    put("a", 1, &message, 3),
                    put("ab", 1, &message, 4),
                    Op::PutInboundQos2("a".into(), 7),
                ])
                .unwrap();
            let delete = Op::DeleteDelivery { client: "a".into(), seq: 1, message: 5 };
            store.commit(&[Op::DeleteSession("a".into()), delete]).unwrap();
        }
        let (_, snapshot, _) = RedbStore::open(&path).unwrap();
        assert_eq!(snapshot.retained, [("t".to_string(), vec![1])]);
        assert!(snapshot.sessions.is_empty());
        assert_eq!(
            snapshot.deliveries,
            [("ab".to_string(), 1, 5, vec![4])],
            "only the other client's row is left"
        );
        assert_eq!(snapshot.messages, [(5, vec![9])], "still referred to");
        assert!(snapshot.inbound_qos2.is_empty());

        std::fs::write(&path, b"this is not a database").unwrap();
        let (_, snapshot, quarantined) = RedbStore::open(&path).unwrap();
        assert!(snapshot.retained.is_empty());
        let aside = quarantined.expect("garbage quarantined");
        assert_eq!(std::fs::read(&aside).unwrap(), b"this is not a database");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A message is written once for all its deliveries, kept while one refers to it, and
    /// gone with the last; a state change rewrites the delivery only.
    #[test]
    fn a_message_row_lives_as_long_as_a_delivery_refers_to_it() {
        let (dir, path) = fresh("refs");
        let (first, second) = (Arc::new(Blob::stored(1, vec![1; 100])), Arc::new(Blob::stored(2, vec![2])));
        let delete = |i: usize, message| Op::DeleteDelivery { client: format!("s{i}"), seq: 1, message };
        let (mut store, _, _) = RedbStore::open(&path).unwrap();
        let fan_out: Vec<Op> = (0..100).map(|i| put(&format!("s{i}"), 1, &first, 0)).collect();
        store.commit(&fan_out).unwrap();
        store.commit(&[put("s0", 1, &first, 1), put("s0", 2, &second, 0)]).unwrap();
        let mut deletes: Vec<Op> = (0..99).map(|i| delete(i, 1)).collect();
        deletes.push(Op::DeleteDelivery { client: "s0".into(), seq: 2, message: 2 });
        store.commit(&deletes).unwrap();
        drop(store);
        let (mut store, snapshot, _) = RedbStore::open(&path).unwrap();
        assert_eq!(snapshot.messages, [(1, vec![1; 100])], "s99 still refers to the first message");
        assert_eq!(snapshot.deliveries, [("s99".to_string(), 1, 1, vec![0])]);
        store.commit(&[delete(99, 1), delete(99, 1), delete(5, 7)]).unwrap();
        drop(store);
        let (_, snapshot, _) = RedbStore::open(&path).unwrap();
        assert!(snapshot.messages.is_empty() && snapshot.deliveries.is_empty(), "{snapshot:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_locked_file_is_an_error_and_left_alone_mid_file_garbage_is_quarantined() {
        let (dir, path) = fresh("lock");
        let (mut first, _, _) = RedbStore::open(&path).unwrap();
        first.commit(&[Op::PutRetained("kept".into(), vec![1])]).unwrap();
        // A second broker on the same directory: refused, nothing renamed.
        let second = RedbStore::open(&path);
        assert!(
            matches!(&second, Err(StoreError::Io(e)) if e.contains("another cauldron")),
            "{:?}",
            second.err()
        );
        assert!(std::fs::read_dir(&dir).unwrap().count() == 1, "no file moved aside");
        drop(first);
        assert_eq!(RedbStore::open(&path).unwrap().1.retained.len(), 1, "the data is intact");

        // 4 KiB of garbage inside the file: quarantined, never a panic.
        let mut bytes = std::fs::read(&path).unwrap();
        let middle = bytes.len() / 2;
        let end = (middle + 4096).min(bytes.len());
        bytes[middle..end].iter_mut().enumerate().for_each(|(i, b)| *b = (i * 7 + 13) as u8);
        std::fs::write(&path, &bytes).unwrap();
        let (_, _, quarantined) = RedbStore::open(&path).expect("starts");
        assert_eq!(std::fs::read(quarantined.expect("quarantined")).unwrap(), bytes);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
