//! Idle TCP connections wait here, with no task and no socket registration of tokio's.
//!
//! Most of a broker's connections are idle (a phone keeps one open all day), and most of what
//! an idle one cost was tokio's: its task (a 512-byte cache-aligned cell) and its socket's
//! registration with the reactor (256 bytes). So a plain TCP connection with nothing buffered
//! or awaited, not woken within the last second, parks: its task ends, its socket moves from
//! tokio's epoll set to this lot's, and what it keeps is one allocation, its [`Bay`], which is
//! also the waker its doorbell rings. Bytes or a hang-up on the socket (seen by the lot's
//! thread), or a ring of the doorbell (a message, a takeover, the keep-alive sweep, shutdown),
//! start a task again that goes on where the parked one stopped. Whichever comes first takes
//! the connection out of its bay; the others find the bay empty.

use std::io;
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::task::{Wake, Waker};
use std::time::Duration;

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Registry, Token};
use tracing::warn;

use super::running::Idle;

/// The process's one lot: an epoll set, watched by a thread of its own, and its bays.
struct Lot {
    registry: Registry,
    bays: Mutex<Bays>,
}

/// Bays by their socket's token in the epoll set.
#[derive(Default)]
struct Bays {
    taken: Vec<Option<Arc<Bay>>>,
    free: Vec<usize>,
}

impl Bays {
    /// The token the next bay gets.
    fn vacant(&self) -> usize {
        self.free.last().copied().unwrap_or(self.taken.len())
    }

    fn occupy(&mut self, token: usize, bay: Arc<Bay>) {
        match token == self.taken.len() {
            true => self.taken.push(Some(bay)),
            false => {
                self.free.pop();
                self.taken[token] = Some(bay);
            }
        }
    }

    fn vacate(&mut self, token: usize) {
        if let Some(slot @ Some(_)) = self.taken.get_mut(token) {
            *slot = None;
            self.free.push(token);
        }
    }
}

/// One parked connection; as a waker, it unparks it.
struct Bay {
    slot: Mutex<Slot>,
}

/// A bay's connection until it is unparked, and its socket's token once in the epoll set.
struct Slot {
    idle: Option<Idle>,
    /// 32 bits, which is room enough for tokens (fewer than there are file descriptors) and
    /// keeps the bay in a smaller allocation.
    token: Option<u32>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// The lot, started by the first connection to park; `None` if the system gave no epoll set
/// (connections then stay tasks).
fn lot() -> Option<&'static Lot> {
    static LOT: OnceLock<Option<Lot>> = OnceLock::new();
    LOT.get_or_init(|| match open() {
        Ok(lot) => Some(lot),
        Err(e) => {
            warn!(error = %e, "idle connections cannot park; each keeps its task");
            None
        }
    })
    .as_ref()
}

fn open() -> io::Result<Lot> {
    let poll = Poll::new()?;
    let registry = poll.registry().try_clone()?;
    std::thread::Builder::new().name("cauldron-parking".into()).spawn(move || watch(poll))?;
    Ok(Lot { registry, bays: Mutex::default() })
}

/// The lot's thread: unparks each connection whose socket has something to say.
fn watch(mut poll: Poll) {
    let mut events = Events::with_capacity(256);
    loop {
        if let Err(e) = poll.poll(&mut events, None) {
            if e.kind() != io::ErrorKind::Interrupted {
                warn!(error = %e, "waiting on parked connections");
                std::thread::sleep(Duration::from_millis(10));
            }
            continue;
        }
        let Some(lot) = lot() else { return };
        for event in &events {
            let bay = lock(&lot.bays).taken.get(event.token().0).cloned().flatten();
            // A stale event may find the bay of a newer connection: it wakes for nothing.
            if let Some(bay) = bay {
                bay.unpark();
            }
        }
    }
}

/// What came of an attempt to park.
pub(super) enum Parking {
    /// In its bay, or already out of it again with a task of its own.
    Done,
    /// Given back: it must look at its sources again at once, as its doorbell's waker may be
    /// the bay's now, or something rang.
    Refused(Idle),
}

/// Parks `idle`.
///
/// The order matters. The doorbell is handed to the bay first, and only then can the socket
/// wake it: a task started by the socket takes the doorbell for itself, which a hand-over after
/// it would undo, leaving rings to a bay that is empty.
pub(super) fn park(idle: Idle) -> Parking {
    let Some(lot) = lot() else { return Parking::Refused(idle) };
    let fd = idle.socket().as_raw_fd();
    let doorbell = Arc::clone(idle.doorbell());
    let bay = Arc::new(Bay { slot: Mutex::new(Slot { idle: Some(idle), token: None }) });
    let rang = doorbell.hand_to(&Waker::from(Arc::clone(&bay)));
    // Held while the socket joins the set, so that an unpark, which needs it, waits.
    let mut slot = lock(&bay.slot);
    if rang {
        return match slot.idle.take() {
            Some(idle) => Parking::Refused(idle),
            None => Parking::Done, // a ring since took it out and started its task
        };
    }
    if slot.idle.is_none() {
        return Parking::Done;
    }
    let mut bays = lock(&lot.bays);
    let token = bays.vacant();
    if let Err(e) = lot.registry.register(&mut SourceFd(&fd), Token(token), Interest::READABLE) {
        warn!(error = %e, "a connection could not park");
        return match slot.idle.take() {
            Some(idle) => Parking::Refused(idle),
            None => Parking::Done,
        };
    }
    slot.token = Some(token as u32);
    bays.occupy(token, Arc::clone(&bay));
    Parking::Done
}

impl Bay {
    fn unpark(&self) {
        let (idle, token) = {
            let mut slot = lock(&self.slot);
            let Some(idle) = slot.idle.take() else { return };
            (idle, slot.token.take())
        };
        if let (Some(lot), Some(token)) = (lot(), token) {
            let _ = lot.registry.deregister(&mut SourceFd(&idle.socket().as_raw_fd()));
            lock(&lot.bays).vacate(token as usize);
        }
        idle.wake();
    }
}

impl Wake for Bay {
    fn wake(self: Arc<Self>) {
        self.unpark();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.unpark();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_vacated_token_is_given_again() {
        let mut bays = Bays::default();
        let bay = || Arc::new(Bay { slot: Mutex::new(Slot { idle: None, token: None }) });
        assert_eq!(bays.vacant(), 0);
        bays.occupy(0, bay());
        bays.occupy(bays.vacant(), bay());
        bays.vacate(0);
        bays.vacate(0); // twice: no double entry in the free list
        assert_eq!(bays.vacant(), 0);
        bays.occupy(0, bay());
        assert_eq!(bays.vacant(), 2);
        assert_eq!(bays.free, Vec::<usize>::new());
    }
}
