//! The broker's sessions by client id. Each entry is only the handle: the key is the handle's
//! own client id, so a broker with many clients keeps one pointer per session here rather
//! than a second copy of every id (40 bytes a slot instead of 8).

use std::borrow::Borrow;
use std::collections::HashSet;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use crate::session::SessionHandle;

#[derive(Default)]
pub(crate) struct SessionTable(HashSet<ById>);

/// A handle, hashed and compared by its client id.
struct ById(Arc<SessionHandle>);

impl Borrow<str> for ById {
    fn borrow(&self) -> &str {
        &self.0.client_id
    }
}

impl Hash for ById {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // As `str` hashes, so that a lookup by `&str` finds it (`Borrow`'s contract).
        <str as Hash>::hash(&self.0.client_id, state);
    }
}

impl PartialEq for ById {
    fn eq(&self, other: &Self) -> bool {
        *self.0.client_id == *other.0.client_id
    }
}

impl Eq for ById {}

impl SessionTable {
    pub(crate) fn get(&self, client_id: &str) -> Option<&Arc<SessionHandle>> {
        self.0.get(client_id).map(|entry| &entry.0)
    }

    /// Files `session` under its client id; returns the one it replaced.
    pub(crate) fn insert(&mut self, session: Arc<SessionHandle>) -> Option<Arc<SessionHandle>> {
        self.0.replace(ById(session)).map(|entry| entry.0)
    }

    pub(crate) fn remove(&mut self, client_id: &str) -> Option<Arc<SessionHandle>> {
        self.0.take(client_id).map(|entry| entry.0)
    }

    pub(crate) fn values(&self) -> impl Iterator<Item = &Arc<SessionHandle>> {
        self.0.iter().map(|entry| &entry.0)
    }

    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_are_found_and_replaced_by_client_id() {
        let mut table = SessionTable::default();
        let first = SessionHandle::new_for_test("phone");
        assert!(table.insert(Arc::clone(&first)).is_none());
        let second = SessionHandle::new_for_test("phone");
        let replaced = table.insert(Arc::clone(&second)).expect("the first is replaced");
        assert!(Arc::ptr_eq(&replaced, &first));
        assert!(Arc::ptr_eq(table.get("phone").unwrap(), &second));
        assert!(table.get("tablet").is_none());
        assert_eq!(table.len(), 1);
        assert!(table.remove("phone").is_some());
        assert_eq!(table.values().count(), 0);
    }
}
