//! The subscription trie: topic filters level by level, `+` and `#` as ordinary children.
//! Read-mostly: publishers match under a read lock; only SUBSCRIBE/UNSUBSCRIBE write.

use std::collections::HashMap;
use std::sync::Arc;

use cauldron_proto::{ByteString, SubOptions};

use crate::session::SessionHandle;

/// One client's subscription at a trie node.
#[derive(Clone)]
pub struct Entry {
    pub session: Arc<SessionHandle>,
    pub options: SubOptions,
    pub subscription_id: Option<u32>,
}

#[derive(Default)]
pub struct Router {
    root: Node,
    count: usize,
}

#[derive(Default)]
struct Node {
    children: HashMap<ByteString, Node>,
    entries: Vec<Entry>,
}

impl Node {
    fn is_empty(&self) -> bool {
        self.children.is_empty() && self.entries.is_empty()
    }
}

impl Router {
    /// Adds or replaces (same client, same filter) a subscription. Returns true if it is new.
    pub fn insert(&mut self, filter: &str, entry: Entry) -> bool {
        let mut node = &mut self.root;
        for level in filter.split('/') {
            node = node.children.entry(ByteString::from(level)).or_default();
        }
        match node
            .entries
            .iter_mut()
            .find(|e| Arc::ptr_eq(&e.session, &entry.session))
        {
            Some(existing) => {
                *existing = entry;
                false
            }
            None => {
                node.entries.push(entry);
                self.count += 1;
                true
            }
        }
    }

    /// Removes a client's subscription; returns whether it existed. Empty branches are pruned.
    pub fn remove(&mut self, filter: &str, session: &Arc<SessionHandle>) -> bool {
        let levels: Vec<&str> = filter.split('/').collect();
        let removed = remove_at(&mut self.root, &levels, session);
        if removed {
            self.count -= 1;
        }
        removed
    }

    /// Number of subscriptions held.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Calls `visit` for every subscription whose filter matches `topic` [MQTT-4.7]. A client
    /// with several matching filters is visited once per filter.
    pub fn matches<'a>(&'a self, topic: &str, mut visit: impl FnMut(&'a Entry)) {
        let levels: Vec<&str> = topic.split('/').collect();
        // Filters starting with a wildcard do not match `$` topics [MQTT-4.7.2-1].
        let dollar = topic.starts_with('$');
        match_at(&self.root, &levels, 0, dollar, &mut visit);
    }
}

fn match_at<'a>(
    node: &'a Node,
    levels: &[&str],
    depth: usize,
    dollar: bool,
    visit: &mut impl FnMut(&'a Entry),
) {
    let wildcards_allowed = !(dollar && depth == 0);
    if wildcards_allowed {
        // `#` also matches the parent level itself: "sport/#" matches "sport" [MQTT-4.7.1-2].
        if let Some(hash) = node.children.get("#") {
            hash.entries.iter().for_each(&mut *visit);
        }
    }
    let Some((level, rest)) = levels.split_first() else {
        node.entries.iter().for_each(visit);
        return;
    };
    if let Some(child) = node.children.get(*level) {
        match_at(child, rest, depth + 1, dollar, visit);
    }
    if wildcards_allowed {
        if let Some(plus) = node.children.get("+") {
            match_at(plus, rest, depth + 1, dollar, visit);
        }
    }
}

fn remove_at(node: &mut Node, levels: &[&str], session: &Arc<SessionHandle>) -> bool {
    let Some((level, rest)) = levels.split_first() else {
        let before = node.entries.len();
        node.entries.retain(|e| !Arc::ptr_eq(&e.session, session));
        return node.entries.len() != before;
    };
    let Some(child) = node.children.get_mut(*level) else {
        return false;
    };
    let removed = remove_at(child, rest, session);
    if child.is_empty() {
        node.children.remove(*level);
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::SessionHandle;

    fn entry(id: &str) -> Entry {
        Entry {
            session: SessionHandle::new_for_test(id),
            options: SubOptions::default(),
            subscription_id: None,
        }
    }

    fn matched(router: &Router, topic: &str) -> Vec<String> {
        let mut ids = Vec::new();
        router.matches(topic, |e| ids.push(e.session.client_id.to_string()));
        ids.sort();
        ids
    }

    #[test]
    fn matches_agree_with_the_filter_rules() {
        let mut router = Router::default();
        let filters = ["a/b", "a/+", "a/#", "#", "+/b", "$SYS/#", "+/+/c", "a/b/c"];
        for f in filters {
            router.insert(f, entry(f));
        }
        for topic in ["a/b", "a", "a/b/c", "x/b", "$SYS/x", "$SYS", "/b", "a//c"] {
            let mut expected: Vec<String> = filters
                .iter()
                .filter(|f| cauldron_proto::topic::matches(f, topic))
                .map(|f| f.to_string())
                .collect();
            expected.sort();
            assert_eq!(matched(&router, topic), expected, "topic {topic}");
        }
    }

    #[test]
    fn insert_replaces_and_remove_prunes() {
        let mut router = Router::default();
        let e = entry("c");
        assert!(router.insert("a/b", e.clone()));
        assert!(!router.insert("a/b", e.clone()));
        assert_eq!(router.len(), 1);
        assert!(router.remove("a/b", &e.session));
        assert!(!router.remove("a/b", &e.session));
        assert!(router.root.is_empty());
        assert_eq!(router.len(), 0);
    }
}
