//! The task that serves one connection, written as a state machine of its own rather than an
//! `async fn`: what an idle connection keeps is then exactly the fields below, and not the
//! larger state the compiler lays out for a chain of futures (measured: 2.6 KB of future for
//! an `async` loop, before the handshake's state it could not overlap).
//!
//! Opening (PROXY header, TLS, WebSocket, CONNECT, CONNACK) runs in a box that is freed when
//! it ends; running polls every source by hand (doorbell, socket, commits, keep alive) so no
//! future per source is kept; closing is boxed again.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{sleep_until, Instant};
use tokio_util::io::poll_read_buf;
use tokio_util::sync::CancellationToken;

use super::{Connection, Exit, MAX_PENDING, READ_MAX, READ_MIN, WRITE_HIGH_WATER};
use crate::broker::Broker;
use crate::metrics;
use crate::session::{Doorbell, Session, SessionHandle};
use crate::store::StoreError;

/// A byte stream MQTT runs on: TCP, a Unix socket, TLS or WebSocket.
pub(crate) trait Transport: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Transport for T {}

/// Boxed, so one task type serves every kind of listener (one indirect call per read or
/// write, next to a system call).
pub(crate) type Stream = Box<dyn Transport>;

type Boxed<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Turns of the connection loop in one poll before it yields to other tasks.
const TURNS_PER_POLL: usize = 32;

/// Largest read into the stack; a connection whose reads fill it reads into its own buffer.
const STACK_READ: usize = 2048;

/// A connection woken again within this is active and keeps its buffers (freeing and growing
/// them on every wake-up would cost more than the traffic); one woken less often frees its
/// empty buffers before it sleeps. One that stops being active frees them at its next
/// wake-up, a keep alive's PINGREQ at the latest.
const ACTIVE_WITHIN: Duration = Duration::from_secs(1);

/// The task serving one accepted connection, from its first byte to its close.
pub(crate) struct ConnectionTask {
    broker: Arc<Broker>,
    state: State,
}

// Running inline is the point: it is the state that lasts, in the task's one allocation; the
// short-lived states are boxed instead.
#[allow(clippy::large_enum_variant)]
enum State {
    Opening(Boxed<Option<Running>>),
    Running(Running),
    Closing(Boxed<()>),
    Done,
}

impl ConnectionTask {
    /// `opening` readies the transport and runs the handshake ([`super::open`]).
    pub(crate) fn new(
        broker: Arc<Broker>,
        opening: impl Future<Output = Option<Running>> + Send + 'static,
    ) -> Self {
        broker.metrics.connected();
        ConnectionTask { broker, state: State::Opening(Box::pin(opening)) }
    }
}

impl Drop for ConnectionTask {
    fn drop(&mut self) {
        metrics::sub(&self.broker.metrics.connections_current, 1);
    }
}

impl Future for ConnectionTask {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let task = self.get_mut();
        loop {
            match &mut task.state {
                State::Opening(opening) => match opening.as_mut().poll(cx) {
                    Poll::Ready(Some(running)) => task.state = State::Running(running),
                    Poll::Ready(None) => task.state = State::Done,
                    Poll::Pending => return Poll::Pending,
                },
                State::Running(running) => match running.poll_exit(cx) {
                    Poll::Ready(exit) => {
                        let State::Running(running) = std::mem::replace(&mut task.state, State::Done) else {
                            unreachable!("matched just above");
                        };
                        let Running { conn, mut stream, .. } = running;
                        task.state =
                            State::Closing(Box::pin(async move { conn.finish(exit, &mut stream).await }));
                    }
                    Poll::Pending => return Poll::Pending,
                },
                State::Closing(closing) => match closing.as_mut().poll(cx) {
                    Poll::Ready(()) => task.state = State::Done,
                    Poll::Pending => return Poll::Pending,
                },
                State::Done => return Poll::Ready(()),
            }
        }
    }
}

/// A connection past its handshake, with its transport. The read buffer exists only while it
/// holds part of a packet: an idle connection keeps no buffer at all, and reads into the stack
/// of whichever poll finds data.
pub(crate) struct Running {
    conn: Connection,
    stream: Stream,
    rbuf: BytesMut,
    /// Read size: up to `STACK_READ` on the stack, beyond into `rbuf` (see `poll_read`).
    read_size: usize,
    /// A write left the buffer empty and the transport must still be flushed (WebSocket).
    flush: bool,
    /// The session may have messages to send.
    drain: bool,
    /// Packets that arrived with CONNECT are handled (at the first poll).
    started: bool,
    /// A new connection for the client id is about to take the session over: nothing more is
    /// read, so nothing the client sent after that connection's CONNECT counts here.
    settled: bool,
    /// When it was last woken (see `ACTIVE_WITHIN`).
    last_wake: Instant,
    /// When the keep alive runs out; moved by every packet. The broker's `KeepAlives` rings
    /// the doorbell at a deadline that only ever lags this one: rung early, the connection
    /// files itself again, so a packet costs no timer update.
    deadline: Instant,
    /// Only while a publisher is paused for a congested subscriber.
    pause: Option<Boxed<()>>,
    shutdown: CancellationToken,
}

/// Resolves when the congested subscriber has room again or the pause is over.
async fn room_or_timeout(subscriber: Arc<SessionHandle>, until: Instant) {
    tokio::select! {
        _ = subscriber.has_room() => {}
        _ = sleep_until(until) => drop(subscriber.edit(Session::mark_stalled)),
    }
}

/// What one look at every source found.
enum Turn {
    /// Something happened: look again.
    Progress,
    /// Nothing is ready; every source has the task's waker.
    Idle,
    Exit(Exit),
}

impl Running {
    pub(super) fn new(
        conn: Connection,
        stream: Stream,
        rbuf: BytesMut,
        shutdown: CancellationToken,
    ) -> Running {
        let deadline = Instant::now() + conn.keep_alive.unwrap_or_default();
        if conn.keep_alive.is_some() {
            conn.broker.keep_alives.file(deadline, &conn.doorbell);
        }
        Running {
            conn,
            stream,
            rbuf,
            read_size: READ_MIN,
            flush: false,
            // Whatever the session holds, and packets that came with CONNECT, go first.
            drain: true,
            started: false,
            settled: false,
            // Long ago: a connection is not active until it is woken again soon.
            last_wake: Instant::now().checked_sub(ACTIVE_WITHIN).unwrap_or_else(Instant::now),
            deadline,
            pause: None,
            shutdown,
        }
    }

    fn poll_exit(&mut self, cx: &mut Context<'_>) -> Poll<Exit> {
        if !self.started {
            self.started = true;
            if let Some(exit) = self.conn.process(&mut self.rbuf, &mut self.deadline) {
                return Poll::Ready(exit);
            }
        }
        let now = Instant::now();
        let active = now.duration_since(self.last_wake) < ACTIVE_WITHIN;
        self.last_wake = now;
        for _ in 0..TURNS_PER_POLL {
            match self.turn(cx) {
                Turn::Progress => {}
                Turn::Idle => {
                    if !active {
                        self.release_buffers();
                    }
                    return Poll::Pending;
                }
                Turn::Exit(exit) => return Poll::Ready(exit),
            }
        }
        // Busy: let other tasks run, and come back at once.
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// One look at every source, in order of precedence: the doorbell (takeover, shutdown,
    /// queued messages), writing, commits, a pause ending, reading, the keep alive.
    fn turn(&mut self, cx: &mut Context<'_>) -> Turn {
        let conn = &mut self.conn;
        let rung = conn.doorbell.take(cx);
        if rung & Doorbell::KICK != 0 {
            return Turn::Exit(match conn.broker.redirection() {
                Some(redirect) => Exit::Redirected(redirect),
                None => Exit::TakenOver,
            });
        }
        if rung & Doorbell::SHUTDOWN != 0 || self.shutdown.is_cancelled() {
            return Turn::Exit(Exit::Shutdown);
        }
        if rung & Doorbell::SETTLE != 0 && !self.settled {
            let exit = self.settle(cx);
            self.conn.session.notify_settled();
            if let Some(exit) = exit {
                return Turn::Exit(exit);
            }
        }
        let conn = &mut self.conn;
        let mut progress = false;
        self.drain |= rung & Doorbell::MESSAGES != 0 || std::mem::take(&mut conn.window_opened);
        if self.drain && conn.wbuf.len() < WRITE_HIGH_WATER {
            self.drain = conn.drain_session();
            progress |= self.drain;
        }
        if !conn.wbuf.is_empty() {
            match Pin::new(&mut self.stream).poll_write(cx, &conn.wbuf) {
                Poll::Ready(Ok(n)) if n > 0 => {
                    metrics::add(&conn.broker.metrics.bytes_sent, n as u64);
                    conn.wbuf.advance(n);
                    // Framed transports (WebSocket) hold writes until flushed; for TCP and
                    // TLS this only pushes out what is already on its way.
                    self.flush = conn.wbuf.is_empty();
                    progress = true;
                }
                Poll::Ready(_) => return Turn::Exit(Exit::Closed),
                Poll::Pending => {}
            }
        }
        if self.flush {
            match Pin::new(&mut self.stream).poll_flush(cx) {
                Poll::Ready(Ok(())) => self.flush = false,
                Poll::Ready(Err(_)) => return Turn::Exit(Exit::Closed),
                Poll::Pending => {}
            }
        }
        while let Some(ticket) = conn.pending.front_mut() {
            let Poll::Ready(result) = Pin::new(ticket).poll(cx) else { break };
            if let Some(exit) = conn.committed(result.unwrap_or(Err(StoreError::Stopped))) {
                return Turn::Exit(exit);
            }
            progress = true;
        }
        if let Some(paused) = &conn.paused {
            let (subscriber, until) = &**paused;
            let waiting =
                self.pause.get_or_insert_with(|| Box::pin(room_or_timeout(Arc::clone(subscriber), *until)));
            if waiting.as_mut().poll(cx).is_ready() {
                self.pause = None;
                conn.paused = None;
                // Packets read before the pause are handled now.
                if let Some(exit) = conn.process(&mut self.rbuf, &mut self.deadline) {
                    return Turn::Exit(exit);
                }
                self.drain = true;
                progress = true;
            }
        }
        // Too much waiting on commits or taps: stop reading, so TCP slows the client.
        if conn.pending.len() < MAX_PENDING && conn.paused.is_none() && !self.settled {
            match self.poll_read(cx) {
                Poll::Ready(Ok(n)) if n > 0 => {
                    metrics::add(&self.conn.broker.metrics.bytes_received, n as u64);
                    if let Some(exit) = self.conn.process(&mut self.rbuf, &mut self.deadline) {
                        return Turn::Exit(exit);
                    }
                    progress = true;
                }
                Poll::Ready(_) => return Turn::Exit(Exit::Closed),
                Poll::Pending => {}
            }
        }
        if rung & Doorbell::KEEP_ALIVE != 0 {
            if Instant::now() >= self.deadline {
                return Turn::Exit(Exit::KeepAliveTimeout);
            }
            self.conn.broker.keep_alives.file(self.deadline, &self.conn.doorbell);
        }
        match progress {
            true => Turn::Progress,
            false => Turn::Idle,
        }
    }

    /// Handles what the socket already holds, for a successor waiting to take the session
    /// over (`Doorbell::SETTLE`): a DISCONNECT there ends this connection as the client meant.
    /// A connection holding back reads (commits, a pause) leaves them unread.
    fn settle(&mut self, cx: &mut Context<'_>) -> Option<Exit> {
        self.settled = true;
        if self.conn.pending.len() >= MAX_PENDING || self.conn.paused.is_some() {
            return None;
        }
        // Bounded: a client streaming packets does not keep its successor waiting.
        for _ in 0..TURNS_PER_POLL {
            match self.poll_read(cx) {
                Poll::Ready(Ok(n)) if n > 0 => {
                    metrics::add(&self.conn.broker.metrics.bytes_received, n as u64);
                    if let Some(exit) = self.conn.process(&mut self.rbuf, &mut self.deadline) {
                        return Some(exit);
                    }
                }
                // Closed by the client: it is the takeover that ends this connection, so the
                // will is decided as for one (see `Connection::finish`).
                _ => return None,
            }
        }
        None
    }

    /// Reads what the socket has. A quiet connection reads into the stack and keeps only what
    /// is left of an incomplete packet; one whose reads fill that reads straight into its
    /// buffer, which doubles while reads fill it, up to `READ_MAX`.
    fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<usize>> {
        if self.read_size > STACK_READ {
            if self.rbuf.capacity() - self.rbuf.len() < self.read_size / 4 {
                self.rbuf.reserve(self.read_size);
            }
            let free = self.rbuf.capacity() - self.rbuf.len();
            let read = ready!(poll_read_buf(Pin::new(&mut self.stream), cx, &mut self.rbuf))?;
            if read == free {
                self.read_size = (self.read_size * 2).min(READ_MAX);
            }
            return Poll::Ready(Ok(read));
        }
        let mut stack = [std::mem::MaybeUninit::<u8>::uninit(); STACK_READ];
        let mut buf = ReadBuf::uninit(&mut stack);
        ready!(Pin::new(&mut self.stream).poll_read(cx, &mut buf))?;
        let read = buf.filled().len();
        if read == STACK_READ {
            self.read_size = STACK_READ * 2;
        }
        self.rbuf.extend_from_slice(buf.filled());
        Poll::Ready(Ok(read))
    }

    /// Before an inactive connection sleeps: buffers that hold nothing are freed, so an idle
    /// connection costs only its state.
    fn release_buffers(&mut self) {
        if self.rbuf.is_empty() {
            self.rbuf = BytesMut::new();
            self.read_size = READ_MIN;
        }
        self.conn.release_buffers();
    }
}

#[cfg(test)]
mod tests {
    /// What an idle connection keeps is this state (in its tokio task, whose cell tokio rounds
    /// up to 128 bytes: at most about 400 bytes here make a 512-byte cell). A field that only
    /// some connections need belongs in `Extras`.
    #[test]
    fn an_idle_connection_keeps_a_small_state() {
        let size = std::mem::size_of::<super::ConnectionTask>();
        assert!(size <= 392, "ConnectionTask is {size} bytes");
    }
}
