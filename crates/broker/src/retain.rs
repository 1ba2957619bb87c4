//! Retained messages: the last retained message per topic name [MQTT-3.3.1-5], in a tree of
//! topic levels. A subscription walks only the branches its filter can match, so its cost grows
//! with what matches, not with what is stored (an OwnTracks server keeps a location and a card
//! per device), and messages come out in topic order, parents before children, as Mosquitto
//! sends them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use cauldron_proto::ByteString;

use crate::message::Message;

#[derive(Default)]
pub(crate) struct Retained {
    root: Node,
    count: usize,
}

#[derive(Default)]
struct Node {
    message: Option<Arc<Message>>,
    /// Ordered, so that a walk visits topics in a stable, sorted order.
    children: BTreeMap<ByteString, Node>,
}

impl Node {
    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.message.is_none() && self.children.is_empty()
    }
}

/// One step of a walk: match the filter from level `at` below `node`, or take the whole
/// subtree (after a `#`).
enum Step<'a> {
    Match(&'a Node, usize),
    Subtree(&'a Node),
}

impl Retained {
    /// Stores a retained publish; an empty payload deletes the topic's message [MQTT-3.3.1-6].
    pub(crate) fn set(&mut self, message: &Arc<Message>) {
        if message.payload.is_empty() {
            self.remove(&message.topic);
            return;
        }
        let mut node = &mut self.root;
        for level in message.topic.split('/') {
            node = node.children.entry(ByteString::from(level)).or_default();
        }
        if node.message.replace(Arc::clone(message)).is_none() {
            self.count += 1;
        }
    }

    /// Deletes the message on `topic` and prunes the branches left empty. Iterative: the
    /// depth is bounded by the codec's level limit, but nothing here relies on it.
    fn remove(&mut self, topic: &str) {
        let levels: Vec<&str> = topic.split('/').collect();
        let mut node = &mut self.root;
        // The deepest ancestor that must stay (it holds something besides this branch), and
        // the level below it where the branch to cut off starts.
        let mut keep_depth = 0;
        for (depth, level) in levels.iter().enumerate() {
            if node.message.is_some() || node.children.len() > 1 {
                keep_depth = depth;
            }
            match node.children.get_mut(*level) {
                Some(child) => node = child,
                None => return,
            }
        }
        if node.message.take().is_none() {
            return;
        }
        self.count -= 1;
        if !node.children.is_empty() {
            return;
        }
        let mut ancestor = &mut self.root;
        for level in &levels[..keep_depth] {
            ancestor = ancestor.children.get_mut(*level).expect("walked above");
        }
        ancestor.children.remove(levels[keep_depth]);
    }

    /// Retained messages whose topic matches `filter`, in topic order, parents first, expired
    /// ones left out. Filters starting with a wildcard do not match `$` topics [MQTT-4.7.2-1].
    pub(crate) fn matching(&self, filter: &str) -> Vec<Arc<Message>> {
        let levels: Vec<&str> = filter.split('/').collect();
        let now = Instant::now();
        let mut found = Vec::new();
        let mut emit = |node: &Node| {
            if let Some(m) = node.message.as_ref().filter(|m| !m.is_expired(now)) {
                found.push(Arc::clone(m));
            }
        };
        // Children are pushed in reverse so that they come off the stack in order.
        let mut stack = vec![Step::Match(&self.root, 0)];
        while let Some(step) = stack.pop() {
            match step {
                Step::Subtree(node) => {
                    emit(node);
                    stack.extend(node.children.values().rev().map(Step::Subtree));
                }
                Step::Match(node, at) => {
                    let visible = |level: &ByteString| at > 0 || !level.starts_with('$');
                    match levels.get(at) {
                        None => emit(node),
                        // `#` also matches the parent level itself [MQTT-4.7.1-2].
                        Some(&"#") => {
                            emit(node);
                            let children = node.children.iter().rev().filter(|(l, _)| visible(l));
                            stack.extend(children.map(|(_, child)| Step::Subtree(child)));
                        }
                        Some(&"+") => {
                            let children = node.children.iter().rev().filter(|(l, _)| visible(l));
                            stack.extend(children.map(|(_, child)| Step::Match(child, at + 1)));
                        }
                        Some(level) => {
                            if let Some(child) = node.children.get(*level) {
                                stack.push(Step::Match(child, at + 1));
                            }
                        }
                    }
                }
            }
        }
        found
    }

    pub(crate) fn len(&self) -> usize {
        self.count
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use cauldron_proto::{Properties, Publish, QoS};

    fn message(topic: &str, payload: &'static str) -> Arc<Message> {
        let publish = Publish {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: true,
            topic: topic.into(),
            packet_id: None,
            properties: Properties::default(),
            payload: Bytes::from_static(payload.as_bytes()),
        };
        Arc::new(Message::from_publish(publish, None))
    }

    fn topics(retained: &Retained, filter: &str) -> Vec<String> {
        retained.matching(filter).iter().map(|m| m.topic.to_string()).collect()
    }

    const TOPICS: [&str; 10] =
        ["1/2/3/4/5/6/7", "1/2/3/4", "1", "a/b", "a", "a/c/d", "/x", "$SYS/up", "b//c", "a/b/c"];

    #[test]
    fn matching_agrees_with_the_filter_rules_in_topic_order() {
        let mut retained = Retained::default();
        for t in TOPICS {
            retained.set(&message(t, "m"));
        }
        assert_eq!(retained.len(), TOPICS.len());
        let filters = ["#", "+", "a/#", "a/+", "+/b", "$SYS/#", "+/+/+", "b/+/c", "/+", "1/2/3/4/#", "x"];
        for filter in filters {
            let mut expected: Vec<String> = TOPICS
                .iter()
                .filter(|t| cauldron_proto::topic::matches(filter, t))
                .map(|t| t.to_string())
                .collect();
            // Topic order, parents first: comparing level lists gives exactly that.
            expected.sort_by(|a, b| a.split('/').cmp(b.split('/')));
            assert_eq!(topics(&retained, filter), expected, "filter {filter}");
        }
        assert_eq!(topics(&retained, "#")[..3], ["/x", "1", "1/2/3/4"]);
    }

    #[test]
    fn empty_payload_deletes_and_prunes() {
        let mut retained = Retained::default();
        for t in ["1/2/3/4/5/6/7", "1/2/3/4", "1"] {
            retained.set(&message(t, "m"));
        }
        retained.set(&message("1/2/3/4", ""));
        assert_eq!(topics(&retained, "#"), ["1", "1/2/3/4/5/6/7"]);
        retained.set(&message("1/2/3/4/5/6/7", ""));
        assert_eq!(topics(&retained, "#"), ["1"]);
        assert!(retained.root.children["1"].children.is_empty(), "the empty branch is cut off");
        retained.set(&message("1", ""));
        assert!(retained.root.is_empty());
        assert_eq!(retained.len(), 0);
        // Deleting what is not there changes nothing.
        retained.set(&message("nothing/here", ""));
        assert_eq!(retained.len(), 0);
    }

    #[test]
    fn replacing_keeps_one_message_per_topic() {
        let mut retained = Retained::default();
        retained.set(&message("t", "old"));
        retained.set(&message("t", "new"));
        assert_eq!(retained.len(), 1);
        assert_eq!(&retained.matching("t")[0].payload[..], b"new");
    }
}
