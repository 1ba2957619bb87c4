//! Taps: in-process observers of published messages (the OwnTracks recorder). A tap sees every
//! message on topics matching its filter after access control, with no session or socket in
//! between, and the publisher's acknowledgement waits until the observer says it has the
//! message safe: nothing acknowledged is ever missing from what the observer keeps.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use crate::message::Message;
use crate::store::{StoreError, Ticket};

pub(crate) struct Tap {
    /// `None`: every topic but `$SYS/`.
    pub filter: Option<String>,
    pub sender: mpsc::Sender<Tapped>,
}

impl Tap {
    fn sees(&self, topic: &str) -> bool {
        match &self.filter {
            Some(filter) => cauldron_proto::topic::matches(filter, topic),
            None => !topic.starts_with("$SYS/"),
        }
    }
}

/// A message handed to a tap. Call [`Tapped::done`] once it is kept; dropping it unanswered
/// counts as a failure, and the publisher is then disconnected unacknowledged.
pub struct Tapped {
    pub message: Arc<Message>,
    done: oneshot::Sender<Result<(), StoreError>>,
}

impl Tapped {
    /// Releases the publisher's acknowledgement (`Ok`), or refuses it (`Err`: the publisher is
    /// disconnected and sends the message again when it reconnects).
    pub fn done(self, result: Result<(), String>) {
        let _ = self.done.send(result.map_err(StoreError::Io));
    }
}

/// Hands `message` to each matching tap and returns what its acknowledgement must wait for. A
/// full tap is handed the message by a task, so the broker never blocks and never drops.
pub(crate) fn feed(taps: &[Tap], message: &Arc<Message>) -> Option<Ticket> {
    use mpsc::error::TrySendError;
    let mut tickets = Vec::new();
    for tap in taps.iter().filter(|t| t.sees(&message.topic)) {
        let (done, ticket) = oneshot::channel();
        match tap.sender.try_send(Tapped { message: Arc::clone(message), done }) {
            Ok(()) => tickets.push(ticket),
            // The observer has stopped: there is nothing to wait for.
            Err(TrySendError::Closed(_)) => {}
            Err(TrySendError::Full(tapped)) => {
                let sender = tap.sender.clone();
                tokio::spawn(async move { sender.send(tapped).await });
                tickets.push(ticket);
            }
        }
    }
    match tickets.len() {
        0 => None,
        1 => tickets.pop(),
        _ => {
            // Several taps: one ticket that resolves when all have answered.
            let (done, ticket) = oneshot::channel();
            tokio::spawn(async move {
                let mut result = Ok(());
                for ticket in tickets {
                    if let Err(e) = ticket.await.unwrap_or(Err(StoreError::Stopped)) {
                        result = Err(e);
                    }
                }
                let _ = done.send(result);
            });
            Some(ticket)
        }
    }
}
