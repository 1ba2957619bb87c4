//! The subscription trie: topic filters level by level, `+` and `#` as ordinary children, and
//! shared subscription groups (`$share/<group>/<filter>`) kept at their filter's node.
//! Read-mostly: publishers match under a read lock; only SUBSCRIBE/UNSUBSCRIBE write.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use cauldron_proto::{topic, ByteString, SubOptions};

use crate::session::SessionHandle;

/// One client's subscription at a trie node.
#[derive(Clone)]
pub(crate) struct Entry {
    pub session: Arc<SessionHandle>,
    pub options: SubOptions,
    pub subscription_id: Option<u32>,
}

/// A shared subscription: each message goes to one member [MQTT-4.8.2].
struct Group {
    name: ByteString,
    /// The whole `$share/<group>/<filter>`, which identifies the group to its members.
    filter: ByteString,
    members: Vec<Entry>,
    /// Round-robin cursor; atomic because matching runs under the read lock.
    next: AtomicUsize,
}

impl Group {
    /// The next member in turn, preferring connected ones; `skip` is left out (a member that is
    /// handing its messages back).
    fn pick(&self, skip: Option<&Arc<SessionHandle>>) -> Option<&Entry> {
        let n = self.members.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let candidates = (0..n)
            .map(|i| &self.members[(start + i) % n])
            .filter(|e| skip.is_none_or(|s| !Arc::ptr_eq(s, &e.session)));
        let mut fallback = None;
        for entry in candidates {
            if entry.session.is_online() {
                return Some(entry);
            }
            fallback.get_or_insert(entry);
        }
        fallback
    }
}

/// What a publish matched: an ordinary subscription, or the member chosen from a shared group.
pub(crate) enum Match<'a> {
    Direct(&'a Entry),
    Shared(&'a Entry, &'a ByteString),
}

#[derive(Default)]
pub(crate) struct Router {
    root: Node,
    count: usize,
}

#[derive(Default)]
struct Node {
    children: HashMap<ByteString, Node>,
    entries: Vec<Entry>,
    groups: Vec<Group>,
}

impl Node {
    fn is_empty(&self) -> bool {
        self.children.is_empty() && self.entries.is_empty() && self.groups.is_empty()
    }

    fn find(&self, filter: &str) -> Option<&Node> {
        filter.split('/').try_fold(self, |node, level| node.children.get(level))
    }
}

/// Replaces the client's entry in `entries` or adds it; true if added.
fn upsert(entries: &mut Vec<Entry>, entry: Entry) -> bool {
    match entries.iter_mut().find(|e| Arc::ptr_eq(&e.session, &entry.session)) {
        Some(existing) => {
            *existing = entry;
            false
        }
        None => {
            entries.push(entry);
            true
        }
    }
}

fn remove_from(entries: &mut Vec<Entry>, session: &Arc<SessionHandle>) -> bool {
    let before = entries.len();
    entries.retain(|e| !Arc::ptr_eq(&e.session, session));
    entries.len() != before
}

impl Router {
    /// Adds or replaces (same client, same filter) a subscription. Returns true if it is new.
    pub(crate) fn insert(&mut self, filter: &ByteString, entry: Entry) -> bool {
        let (shared, path) = match topic::parse_shared(filter) {
            Some(Ok((group, inner))) => (Some(group), inner),
            _ => (None, &filter[..]),
        };
        let mut node = &mut self.root;
        for level in path.split('/') {
            node = node.children.entry(ByteString::from(level)).or_default();
        }
        let added = match shared {
            None => upsert(&mut node.entries, entry),
            Some(name) => {
                let index = match node.groups.iter().position(|g| g.name == name) {
                    Some(i) => i,
                    None => {
                        node.groups.push(Group {
                            name: name.into(),
                            filter: filter.clone(),
                            members: Vec::new(),
                            next: AtomicUsize::new(0),
                        });
                        node.groups.len() - 1
                    }
                };
                upsert(&mut node.groups[index].members, entry)
            }
        };
        self.count += usize::from(added);
        added
    }

    /// Removes a client's subscription; returns whether it existed. Empty branches are pruned.
    pub(crate) fn remove(&mut self, filter: &str, session: &Arc<SessionHandle>) -> bool {
        let (shared, path) = match topic::parse_shared(filter) {
            Some(Ok((group, inner))) => (Some(group), inner),
            _ => (None, filter),
        };
        let levels: Vec<&str> = path.split('/').collect();
        let removed = remove_at(&mut self.root, &levels, shared, session);
        self.count -= usize::from(removed);
        removed
    }

    /// Number of subscriptions held (each shared group member counts once).
    pub(crate) fn len(&self) -> usize {
        self.count
    }

    /// Calls `visit` for every subscription whose filter matches `topic` [MQTT-4.7], and for one
    /// member of each matching shared group. A client with several matching filters is visited
    /// once per filter.
    pub(crate) fn matches<'a>(&'a self, topic: &str, mut visit: impl FnMut(Match<'a>)) {
        let levels: Vec<&str> = topic.split('/').collect();
        // Filters starting with a wildcard do not match `$` topics [MQTT-4.7.2-1].
        let dollar = topic.starts_with('$');
        match_at(&self.root, &levels, 0, dollar, &mut visit);
    }

    /// The member of the shared group `filter` (`$share/<group>/<filter>`) whose turn it is,
    /// connected ones first.
    pub(crate) fn member(&self, filter: &str) -> Option<Entry> {
        let Some(Ok((name, path))) = topic::parse_shared(filter) else {
            return None;
        };
        let group = self.root.find(path)?.groups.iter().find(|g| g.name == name)?;
        group.pick(None).cloned()
    }

    /// Another member of the shared group `filter` for a message `leaving` could not take.
    pub(crate) fn other_member(&self, filter: &str, leaving: &Arc<SessionHandle>) -> Option<Entry> {
        let Some(Ok((name, path))) = topic::parse_shared(filter) else {
            return None;
        };
        let group = self.root.find(path)?.groups.iter().find(|g| g.name == name)?;
        group.pick(Some(leaving)).filter(|e| e.session.is_online()).cloned()
    }
}

fn visit_node<'a>(node: &'a Node, visit: &mut impl FnMut(Match<'a>)) {
    for entry in &node.entries {
        visit(Match::Direct(entry));
    }
    for group in &node.groups {
        if let Some(entry) = group.pick(None) {
            visit(Match::Shared(entry, &group.filter));
        }
    }
}

fn match_at<'a>(
    node: &'a Node,
    levels: &[&str],
    depth: usize,
    dollar: bool,
    visit: &mut impl FnMut(Match<'a>),
) {
    let wildcards_allowed = !(dollar && depth == 0);
    if wildcards_allowed {
        // `#` also matches the parent level itself: "sport/#" matches "sport" [MQTT-4.7.1-2].
        if let Some(hash) = node.children.get("#") {
            visit_node(hash, visit);
        }
    }
    let Some((level, rest)) = levels.split_first() else {
        visit_node(node, visit);
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

fn remove_at(node: &mut Node, levels: &[&str], shared: Option<&str>, session: &Arc<SessionHandle>) -> bool {
    let Some((level, rest)) = levels.split_first() else {
        return match shared {
            None => remove_from(&mut node.entries, session),
            Some(name) => {
                let Some(i) = node.groups.iter().position(|g| g.name == name) else {
                    return false;
                };
                let removed = remove_from(&mut node.groups[i].members, session);
                if node.groups[i].members.is_empty() {
                    node.groups.remove(i);
                }
                removed
            }
        };
    };
    let Some(child) = node.children.get_mut(*level) else {
        return false;
    };
    let removed = remove_at(child, rest, shared, session);
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
        router.matches(topic, |m| match m {
            Match::Direct(e) => ids.push(e.session.client_id.to_string()),
            Match::Shared(e, group) => ids.push(format!("{group}:{}", e.session.client_id)),
        });
        ids.sort();
        ids
    }

    #[test]
    fn matches_agree_with_the_filter_rules() {
        let mut router = Router::default();
        let filters = ["a/b", "a/+", "a/#", "#", "+/b", "$SYS/#", "+/+/c", "a/b/c"];
        for f in filters {
            router.insert(&f.into(), entry(f));
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
        assert!(router.insert(&"a/b".into(), e.clone()));
        assert!(!router.insert(&"a/b".into(), e.clone()));
        assert_eq!(router.len(), 1);
        assert!(router.remove("a/b", &e.session));
        assert!(!router.remove("a/b", &e.session));
        assert!(router.root.is_empty());
        assert_eq!(router.len(), 0);
    }

    #[test]
    fn shared_groups_deliver_to_one_member_in_turn() {
        let mut router = Router::default();
        let (a, b) = (entry("a"), entry("b"));
        router.insert(&"$share/g/t/+".into(), a.clone());
        router.insert(&"$share/g/t/+".into(), b.clone());
        router.insert(&"$share/h/t/#".into(), entry("c"));
        let picks: Vec<Vec<String>> = (0..4).map(|_| matched(&router, "t/1")).collect();
        for pick in &picks {
            assert_eq!(pick.len(), 2, "one from each group: {pick:?}");
            assert!(pick.contains(&"$share/h/t/#:c".to_string()));
        }
        let from_g: Vec<&String> =
            picks.iter().flat_map(|p| p.iter().filter(|s| s.starts_with("$share/g"))).collect();
        assert_ne!(from_g[0], from_g[1], "round robin");
        assert!(router.remove("$share/g/t/+", &a.session));
        assert!(router.remove("$share/g/t/+", &b.session));
        assert_eq!(matched(&router, "t/1"), ["$share/h/t/#:c"]);
        assert_eq!(router.len(), 1);
    }
}
