//! Routing a published message to its subscribers, one message at a time or several at once.
//!
//! A route has two halves. `plan` works out who gets the message and on what terms (retained
//! store, taps, the router's read lock held only to copy out the targets, No Local, access
//! checks, one delivery per client at its highest granted QoS); delivering hands each session
//! its copy. A batch plans every message first and then delivers session by session: each
//! subscriber's lock is taken, its journal submitted and its doorbell rung once for all the
//! batch's messages it gets, where one at a time a fan-out paid those (and the cache lines they
//! move between cores) for every message. Each session still gets its messages in the order
//! they were published [MQTT-4.6.0-6].

use std::rc::Rc;
use std::sync::Arc;

use cauldron_proto::ByteString;

use super::{lock, tap, via_stream, Broker, Reach, Routed};
use crate::message::Message;
use crate::metrics::DropReason;
use crate::router::{Entry, Match};
use crate::session::{Enqueued, Session, SessionHandle, Terms};
use crate::store::Ticket;

/// One message's deliveries, worked out and not yet made.
struct Plan {
    message: Arc<Message>,
    /// Who it goes to; shared by the plans of a batch's consecutive messages on one topic.
    targets: Rc<Targets>,
    /// Store failures counted before it was journalled (see `Persistence::confirm`).
    failures: u64,
    /// Its retained copy was journalled.
    journalled: bool,
    reach: Reach,
    observed: Option<Ticket>,
}

/// The sessions a message goes to, each with the terms of its delivery. They depend on the
/// message's topic, QoS, retain flag and publisher only, so the next message of a batch with
/// the same ones shares them (`Plan::targets`) instead of walking the router again.
struct Targets {
    deliveries: Vec<(Arc<SessionHandle>, Terms)>,
    /// Matching subscriptions held back by No Local.
    held_back: usize,
    /// Persistent sessions left to take it from the cluster's stream.
    left_to_stream: usize,
    /// Some session it goes to is away, so the message waits there.
    for_absent: bool,
    /// A shared group's member was picked: the next message picks again, so that a group's
    /// members take turns message by message.
    picked_members: bool,
}

impl Plan {
    /// Whether `message` goes where this plan's message goes, on the same terms.
    fn shares_targets_with(&self, message: &Message, reach: Reach) -> bool {
        let own = &self.message;
        !self.targets.picked_members
            && self.reach == reach
            && own.topic == message.topic
            && own.qos == message.qos
            && own.retain == message.retain
            && own.publisher == message.publisher
    }
}

/// Whether two plans go to the same sessions in the same order (a plan of `None` goes nowhere
/// and makes a run of its own).
fn same_sessions(a: &Option<Plan>, b: &Option<Plan>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) if Rc::ptr_eq(&a.targets, &b.targets) => true,
        (Some(a), Some(b)) => {
            let (a, b) = (&a.targets.deliveries, &b.targets.deliveries);
            a.len() == b.len() && a.iter().zip(b).all(|((x, _), (y, _))| Arc::ptr_eq(x, y))
        }
        _ => false,
    }
}

/// What the deliveries of one message came to.
#[derive(Default)]
struct Tally {
    offered: usize,
    journalled: bool,
    drops: Vec<DropReason>,
    congested: Option<Arc<SessionHandle>>,
}

impl Tally {
    fn count(&mut self, session: &Arc<SessionHandle>, (enqueued, journalled): (Enqueued, bool)) {
        self.offered += 1;
        self.journalled |= journalled;
        match enqueued {
            Enqueued::Dropped(reason) => self.drops.push(reason),
            Enqueued::Congested => self.congested = Some(Arc::clone(session)),
            Enqueued::Queued => {}
        }
    }
}

impl Broker {
    pub(super) fn route(&self, message: Message, observed_here: bool, reach: Reach) -> Routed {
        let Some(mut plan) = self.plan(message, observed_here, reach, None) else {
            return Routed::nowhere();
        };
        // Targets of its own (no previous plan to share with): their terms move into the
        // deliveries.
        let deliveries = match Rc::get_mut(&mut plan.targets) {
            Some(targets) => std::mem::take(&mut targets.deliveries),
            None => plan.targets.deliveries.clone(),
        };
        let mut tally = Tally::default();
        for (session, terms) in deliveries {
            session.deliver_all(std::iter::once((&plan.message, terms)), |outcome| {
                tally.count(&session, outcome)
            });
        }
        self.conclude(plan, tally)
    }

    /// Routes messages one client published, in order, as `publish` routes each (see the
    /// module's comment); returns what became of each.
    pub fn publish_all(&self, mut messages: Vec<Message>) -> Vec<Routed> {
        let reach = self.own_reach();
        if messages.len() == 1 {
            return messages.pop().map(|m| self.route(m, true, reach)).into_iter().collect();
        }
        let mut plans: Vec<Option<Plan>> = Vec::with_capacity(messages.len());
        for message in messages {
            let previous = plans.last().and_then(Option::as_ref);
            let plan = self.plan(message, true, reach, previous);
            plans.push(plan);
        }
        let mut tallies: Vec<Tally> = plans.iter().map(|_| Tally::default()).collect();
        let mut start = 0;
        while start < plans.len() {
            // A run: messages going to the same sessions, in the same order (a fan-out's
            // messages on one topic). Runs go in order, so each session still gets its
            // messages in theirs.
            let end = (start + 1..plans.len())
                .find(|&i| !same_sessions(&plans[start], &plans[i]))
                .unwrap_or(plans.len());
            self.deliver_run(&plans[start..end], &mut tallies[start..end]);
            start = end;
        }
        plans
            .into_iter()
            .zip(tallies)
            .map(|(plan, tally)| match plan {
                Some(plan) => self.conclude(plan, tally),
                None => Routed::nowhere(),
            })
            .collect()
    }

    /// Delivers a run of plans with the same sessions (see `same_sessions`): each session
    /// gets all its messages at once.
    fn deliver_run(&self, plans: &[Option<Plan>], tallies: &mut [Tally]) {
        let plans: Vec<&Plan> = plans.iter().flatten().collect();
        let Some(first) = plans.first() else { return };
        for (column, (session, _)) in first.targets.deliveries.iter().enumerate() {
            let offers = plans.iter().map(|plan| (&plan.message, plan.targets.deliveries[column].1.clone()));
            let mut tally = tallies.iter_mut();
            session.deliver_all(offers, |outcome| {
                tally.next().expect("one tally per plan").count(session, outcome);
            });
        }
    }

    /// Who gets `message` and how; `None` when nobody here may (the stream's copy of a QoS 0
    /// message). A message that goes where `previous` went shares its targets.
    fn plan(
        &self,
        message: Message,
        observed_here: bool,
        reach: Reach,
        previous: Option<&Plan>,
    ) -> Option<Plan> {
        let mut message = Arc::new(message);
        // Each session's journal goes to the store as it is made; one ticket at the end covers
        // them all (`Persistence::confirm`).
        let failures = self.persistence.as_ref().map_or(0, |p| p.failures());
        let mut journalled = false;
        if message.retain && reach != Reach::FromStreamOnly {
            // Kept until replaced: with bytes of its own (see `Message::compacted`).
            message = message.compacted();
            if let (Some(op), Some(persistence)) = (self.keep_retained(&message), &self.persistence) {
                persistence.append(vec![op]);
                journalled = true;
            }
        }
        let observed = match observed_here {
            true => tap::feed(&lock!(self.taps.read()), &message),
            false => None,
        };
        let targets = match previous.filter(|p| p.shares_targets_with(&message, reach)) {
            Some(previous) => Rc::clone(&previous.targets),
            None => Rc::new(self.targets_of(&message, reach)?),
        };
        if targets.for_absent {
            // Queued for a session that is away: it waits there, so with bytes of its own.
            message = message.compacted();
        }
        Some(Plan { message, targets, failures, journalled, reach, observed })
    }

    /// The sessions `message` goes to and on what terms; `None` when nobody here may.
    fn targets_of(&self, message: &Message, reach: Reach) -> Option<Targets> {
        let (mut matches, mut shared, held_back) = self.targets(message);
        if self.is_clustered() {
            // A cluster's share groups get their messages from the cluster, each to one member
            // on one node (see `cluster::groups`).
            shared.clear();
        }
        let picked_members = !shared.is_empty();
        let mut left_to_stream = 0;
        if reach != Reach::All && via_stream(message) {
            let before = matches.len();
            let from_stream = reach == Reach::FromStreamOnly;
            matches.retain(|e| e.session.read(Session::persistent) == from_stream);
            left_to_stream = before - matches.len();
        } else if reach == Reach::FromStreamOnly {
            return None;
        }
        let for_absent = matches.iter().chain(shared.iter().map(|(e, _)| e)).any(|e| !e.session.is_online());
        // Read access is checked on every delivery, wills and retained messages included.
        if self.checks_reads() {
            let allowed = |e: &Entry| self.reader_may(&e.session, &message.topic);
            matches.retain(allowed);
            shared.retain(|(e, _)| allowed(e));
        }
        let mut deliveries = Vec::with_capacity(matches.len() + shared.len());
        // A client with several matching subscriptions gets the message once, at the highest
        // granted QoS, with every subscription identifier [MQTT-3.3.4-2, 3.3.4-3].
        matches.sort_by_key(|e| Arc::as_ptr(&e.session));
        let mut matches = matches.into_iter().peekable();
        while let Some(first) = matches.next() {
            let (mut granted, mut as_published) = (first.options.qos, first.options.retain_as_published);
            let mut ids: Vec<u32> = first.subscription_id.into_iter().collect();
            while let Some(more) = matches.next_if(|e| Arc::ptr_eq(&e.session, &first.session)) {
                granted = granted.max(more.options.qos);
                as_published |= more.options.retain_as_published;
                ids.extend(more.subscription_id);
            }
            let terms = Terms {
                qos: self.outgoing_qos(granted, message.qos),
                // Forwarded messages carry retain 0 unless Retain As Published [MQTT-3.3.1-9].
                retain: message.retain && as_published,
                subscription_ids: ids.into_boxed_slice(),
                shared: None,
            };
            deliveries.push((first.session, terms));
        }
        // Each shared group that matched gave one member, delivered to on its own terms.
        for (entry, filter) in shared {
            let terms = Terms {
                qos: self.outgoing_qos(entry.options.qos, message.qos),
                retain: message.retain && entry.options.retain_as_published,
                subscription_ids: entry.subscription_id.into_iter().collect(),
                shared: Some(Box::new(filter)),
            };
            deliveries.push((entry.session, terms));
        }
        Some(Targets { deliveries, held_back, left_to_stream, for_absent, picked_members })
    }

    /// What became of a message, from its plan and its deliveries' outcomes.
    fn conclude(&self, plan: Plan, tally: Tally) -> Routed {
        for reason in &tally.drops {
            self.metrics.dropped_for(*reason, 1);
        }
        if !tally.drops.is_empty() {
            tracing::debug!(dropped = tally.drops.len(), "message dropped for full queues");
        }
        let over_ceiling = tally.drops.iter().filter(|r| **r == DropReason::Memory).count();
        let reached_stream = plan.reach == Reach::NotFromStream && plan.targets.left_to_stream > 0;
        let offered = tally.offered + usize::from(reached_stream);
        let matched = offered + usize::from(offered == 0 && plan.targets.held_back > 0);
        let durable = match (&self.persistence, plan.journalled || tally.journalled) {
            (Some(persistence), true) => persistence.confirm(plan.failures),
            _ => None,
        };
        Routed { matched, over_ceiling, durable, observed: plan.observed, congested: tally.congested }
    }

    /// Who `message` goes to, copied out of the router under its read lock: the direct
    /// subscriptions, one member of each matching shared group with the group's filter, and how
    /// many subscriptions matched but were held back by No Local.
    fn targets(&self, message: &Message) -> (Vec<Entry>, Vec<(Entry, ByteString)>, usize) {
        let (mut matches, mut shared, mut held_back) = (Vec::new(), Vec::new(), 0);
        lock!(self.router.read()).matches(&message.topic, |m| match m {
            Match::Direct(entry) => {
                // No Local: not back to the connection that published it [MQTT-3.8.3-3].
                let own = message.publisher.as_ref() == Some(&entry.session.client_id);
                match entry.options.no_local && own {
                    // The message still had a subscriber, so MQTT 5 publishers hear
                    // "success", not "no matching subscribers".
                    true => held_back += 1,
                    false => matches.push(entry.clone()),
                }
            }
            Match::Shared(entry, filter) => shared.push((entry.clone(), filter.clone())),
        });
        (matches, shared, held_back)
    }
}
