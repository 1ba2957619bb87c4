//! Retained messages: the last retained message per topic name [MQTT-3.3.1-5].

use std::collections::HashMap;
use std::sync::Arc;

use cauldron_proto::ByteString;

use crate::message::Message;

#[derive(Default)]
pub struct Retained {
    messages: HashMap<ByteString, Arc<Message>>,
}

impl Retained {
    /// Stores a retained publish; an empty payload deletes the topic's message [MQTT-3.3.1-6].
    pub fn set(&mut self, message: &Arc<Message>) {
        if message.payload.is_empty() {
            self.messages.remove(&message.topic);
        } else {
            self.messages.insert(message.topic.clone(), Arc::clone(message));
        }
    }

    /// Retained messages whose topic matches `filter`, expired ones left out.
    pub fn matching(&self, filter: &str) -> Vec<Arc<Message>> {
        let now = std::time::Instant::now();
        self.messages
            .values()
            .filter(|m| !m.is_expired(now) && cauldron_proto::topic::matches(filter, &m.topic))
            .cloned()
            .collect()
    }

    pub fn len(&self) -> usize {
        self.messages.len()
    }
}
