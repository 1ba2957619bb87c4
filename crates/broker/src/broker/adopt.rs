//! Sessions moving between cluster nodes: one node exports a persistent session (its record
//! and what it still owes the client), another adopts it and has the messages published
//! meanwhile replayed into it from the cluster's stream.

use std::sync::Arc;

use cauldron_proto::{topic, ByteString, QoS};

use super::{lock, Broker};
use crate::message::Message;
use crate::router::Entry;
use crate::session::{Delivery, Session, SessionHandle};
use crate::store::{DeliveryState, StoredSession, Ticket};

impl Broker {
    /// The session this node holds for `client_id`, if any.
    pub fn local_session(&self, client_id: &ByteString) -> Option<Arc<SessionHandle>> {
        lock!(self.sessions.lock()).get(client_id).cloned()
    }

    /// Takes on a session another node held, offline until its client's CONNECT attaches it
    /// (which then finds it and resumes it). The ticket resolves once it is stored here.
    pub fn adopt_session(
        &self,
        client_id: &ByteString,
        record: &StoredSession,
        owed: Vec<(Delivery, DeliveryState)>,
    ) -> Result<(Arc<SessionHandle>, Option<Ticket>), String> {
        let handle = self.new_session(client_id);
        let (adopted, ticket) = handle.edit(|state| {
            state.adopt(record, owed)?;
            let mut router = lock!(self.router.write());
            for (filter, (options, id)) in state.subscriptions() {
                router.insert(
                    filter,
                    Entry { session: Arc::clone(&handle), options: *options, subscription_id: *id },
                );
            }
            Ok::<_, crate::store::StoreError>(())
        });
        adopted.map_err(|e| e.to_string())?;
        let previous = lock!(self.sessions.lock()).insert(Arc::clone(&handle));
        if let Some(previous) = previous {
            self.end_session(&previous);
        }
        Ok((handle, ticket))
    }

    /// Queues a message from the cluster's stream for `session` alone, as its subscriptions
    /// would have had it (shared ones aside: a share group's messages went to its members).
    pub fn deliver_replayed(&self, session: &Arc<SessionHandle>, message: Message) -> Option<Ticket> {
        if self.checks_reads() && !self.reader_may(session, &message.topic) {
            return None;
        }
        let own = message.publisher.as_ref() == Some(&session.client_id);
        let (mut granted, mut retain_as_published, mut ids, mut matched) =
            (QoS::AtMostOnce, false, Vec::new(), false);
        session.read(|state| {
            for (filter, (options, id)) in state.subscriptions() {
                let direct = topic::parse_shared(filter).is_none();
                if direct && !(options.no_local && own) && topic::matches(filter, &message.topic) {
                    matched = true;
                    granted = granted.max(options.qos);
                    retain_as_published |= options.retain_as_published;
                    ids.extend(*id);
                }
            }
        });
        if !matched {
            return None;
        }
        let message = Arc::new(message).compacted();
        let delivery = Delivery {
            qos: self.outgoing_qos(granted, message.qos),
            retain: message.retain && retain_as_published,
            subscription_ids: ids.into(),
            shared: None,
            seq: 0,
            message,
        };
        self.deliver_one(session, delivery)
    }

    /// Queues a message the cluster gave this node for the shared group `filter`
    /// (`$share/<group>/<filter>`) for one of its members here; `None` when the group has no
    /// member here any more (another node's member is to have it).
    pub fn deliver_to_group(&self, filter: &str, message: Message) -> Option<Option<Ticket>> {
        let entry = lock!(self.router.read()).member(filter)?;
        let (_, path) = topic::parse_shared(filter)?.ok()?;
        if !topic::matches(path, &message.topic)
            || (self.checks_reads() && !self.reader_may(&entry.session, &message.topic))
        {
            // Not the group's after all (`#` does not take `$` topics), or not readable: done.
            return Some(None);
        }
        let message = Arc::new(message);
        let delivery = Delivery {
            qos: self.outgoing_qos(entry.options.qos, message.qos),
            retain: message.retain && entry.options.retain_as_published,
            subscription_ids: entry.subscription_id.into_iter().collect(),
            shared: Some(Box::new(filter.into())),
            seq: 0,
            message,
        };
        Some(self.deliver_one(&entry.session, delivery))
    }

    /// Queues one message for one session; the ticket covers what that journalled.
    fn deliver_one(&self, session: &SessionHandle, delivery: Delivery) -> Option<Ticket> {
        let failures = self.persistence.as_ref().map_or(0, |p| p.failures());
        let (_, journalled) = session.deliver(delivery);
        self.persistence.as_ref().filter(|_| journalled).and_then(|p| p.confirm(failures))
    }

    /// Whether the shared group `filter` has a member here.
    pub fn has_group_member(&self, filter: &str) -> bool {
        lock!(self.router.read()).member(filter).is_some()
    }

    /// Ends this node's copy of a session that lives on elsewhere in the cluster now (if it
    /// is still the one in the table, and no connection came back for it meanwhile).
    pub fn forget_session(&self, session: &Arc<SessionHandle>) {
        let mut sessions = lock!(self.sessions.lock());
        let current = sessions.get(&session.client_id).is_some_and(|s| Arc::ptr_eq(s, session));
        if !current || session.read(Session::is_online) {
            return;
        }
        sessions.remove(&session.client_id);
        drop(sessions);
        self.end_session(session);
    }
}
