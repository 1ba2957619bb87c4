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
use tokio::net::TcpStream;
use tokio::time::{sleep_until, Instant};
use tokio_util::io::poll_read_buf;
use tokio_util::sync::CancellationToken;
use tokio_util::task::task_tracker::TaskTrackerToken;

use super::stream::Stream;
use super::{parking, Connection, Exit, Resting, MAX_PENDING, READ_MAX, READ_MIN, WRITE_HIGH_WATER};
use crate::broker::Broker;
use crate::metrics;
use crate::session::{Doorbell, Session, SessionHandle};
use crate::store::StoreError;

type Boxed<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Turns of the connection loop in one poll before it yields to other tasks.
const TURNS_PER_POLL: usize = 32;

/// Largest read into the stack; a connection whose reads fill it reads into its own buffer.
const STACK_READ: usize = 2048;

/// The power of two a read size is (every one is).
const fn shift(size: usize) -> u8 {
    size.trailing_zeros() as u8
}

/// A connection woken again within this is active and keeps its buffers (freeing and growing
/// them on every wake-up would cost more than the traffic); one woken less often frees its
/// empty buffers before it sleeps. One that stops being active frees them at its next
/// wake-up, a keep alive's PINGREQ at the latest.
const ACTIVE_WITHIN: Duration = Duration::from_secs(1);

/// The task serving one accepted connection, from its first byte to its close, or to its
/// parking and from its waking (`parking`).
pub(crate) struct ConnectionTask {
    broker: Arc<Broker>,
    /// Counts the connection for its listener (its limit, the wait at shutdown), parked too.
    tracked: TaskTrackerToken,
    state: State,
}

// Running inline is the point: it is the state that lasts, in the task's one allocation; the
// short-lived states are boxed instead.
#[allow(clippy::large_enum_variant)]
enum State {
    Opening(Boxed<Option<Running>>),
    /// Woken from parking: the socket joins this runtime's reactor at the first poll.
    Waking(Asleep),
    Running(Running),
    Closing(Boxed<()>),
    /// The connection went on in a bay: still open, so not counted as closed.
    Parked,
    Done,
}

impl ConnectionTask {
    /// `opening` readies the transport and runs the handshake ([`super::open`]).
    pub(crate) fn new(
        broker: Arc<Broker>,
        tracked: TaskTrackerToken,
        opening: impl Future<Output = Option<Running>> + Send + 'static,
    ) -> Self {
        broker.metrics.connected();
        ConnectionTask { broker, tracked, state: State::Opening(Box::pin(opening)) }
    }

    fn closing(conn: Connection, exit: Exit, stream: Option<Stream>) -> State {
        State::Closing(Box::pin(async move {
            let mut stream = stream;
            conn.finish(exit, stream.as_mut()).await
        }))
    }
}

impl Drop for ConnectionTask {
    fn drop(&mut self) {
        if !matches!(self.state, State::Parked) {
            metrics::sub(&self.broker.metrics.connections_current, 1);
        }
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
                State::Waking(_) => {
                    let State::Waking(asleep) = std::mem::replace(&mut task.state, State::Done) else {
                        unreachable!("matched just above");
                    };
                    task.state = match asleep.into_running() {
                        Ok(running) => State::Running(running),
                        Err(conn) => Self::closing(conn, Exit::Closed, None),
                    };
                }
                State::Running(running) => match running.poll_exit(cx) {
                    Poll::Ready(stop) => {
                        let State::Running(running) = std::mem::replace(&mut task.state, State::Done) else {
                            unreachable!("matched just above");
                        };
                        match stop {
                            Stop::Exit(exit) => {
                                let Running { conn, stream, .. } = running;
                                task.state = Self::closing(conn, exit, Some(stream));
                            }
                            Stop::Quiet => match running.park(&task.tracked) {
                                Ok(()) => {
                                    task.state = State::Parked;
                                    return Poll::Ready(());
                                }
                                Err(Unparked::Running(running)) => {
                                    // It runs on as a task: its socket and maybe its doorbell
                                    // need this task's waker again, which the next poll gives.
                                    task.state = State::Running(running);
                                    cx.waker().wake_by_ref();
                                    return Poll::Pending;
                                }
                                Err(Unparked::Lost(conn)) => {
                                    task.state = Self::closing(conn, Exit::Closed, None)
                                }
                            },
                        }
                    }
                    Poll::Pending => return Poll::Pending,
                },
                State::Closing(closing) => match closing.as_mut().poll(cx) {
                    Poll::Ready(()) => task.state = State::Done,
                    Poll::Pending => return Poll::Pending,
                },
                State::Parked | State::Done => return Poll::Ready(()),
            }
        }
    }
}

/// Why `Running::poll_exit` stopped.
enum Stop {
    Exit(Exit),
    /// Idle, not woken within `ACTIVE_WITHIN`, nothing buffered or awaited, on plain TCP: the
    /// connection may park.
    Quiet,
}

/// A connection that did not park.
enum Unparked {
    /// As it was: it goes on as a task.
    Running(Running),
    /// Its socket could not be moved (out of or back into tokio's reactor): closed.
    Lost(Connection),
}

/// A parked connection: what it remembers, the token that counts it for its listener, and
/// the runtime its task runs on again.
pub(super) struct Idle {
    asleep: Asleep,
    tracked: TaskTrackerToken,
    runtime: tokio::runtime::Handle,
}

/// What a parked connection remembers, with its socket out of any reactor.
struct Asleep {
    conn: Resting,
    socket: std::net::TcpStream,
    last_wake: Instant,
    deadline: Instant,
    shutdown: CancellationToken,
}

impl Idle {
    pub(super) fn socket(&self) -> &std::net::TcpStream {
        &self.asleep.socket
    }

    pub(super) fn doorbell(&self) -> &Arc<Doorbell> {
        &self.asleep.conn.doorbell
    }

    /// Starts its task again, which takes over the listener's token. On a runtime that has
    /// shut down, the task is dropped, and the socket closed with it.
    pub(super) fn wake(self) {
        let Idle { asleep, tracked, runtime } = self;
        let broker = Arc::clone(&asleep.conn.broker);
        metrics::sub(&broker.metrics.connections_parked, 1);
        runtime.spawn(ConnectionTask { broker, tracked, state: State::Waking(asleep) });
    }
}

impl Asleep {
    /// The connection running again, its socket back in the current runtime's reactor.
    // Moved whole, not boxed: this runs once per wake-up, and the error is the rare case.
    #[allow(clippy::result_large_err)]
    fn into_running(self) -> Result<Running, Connection> {
        let Asleep { conn, socket, last_wake, deadline, shutdown } = self;
        let conn = Connection::new(conn);
        // Read here, not once tokio's reactor has seen the socket (it reports a readiness only
        // after its next turn): a successor waiting on SETTLE expects what the client already
        // sent, a DISCONNECT say, to be handled at once.
        let mut rbuf = BytesMut::new();
        let read = read_waiting(&socket, &mut rbuf);
        metrics::add(&conn.broker.metrics.traffic().bytes_received, read as u64);
        let stream = match TcpStream::from_std(socket) {
            Ok(tcp) => Stream::Tcp(tcp),
            Err(e) => {
                tracing::debug!(client = %conn.session.client_id, error = %e, "a parked connection was lost");
                return Err(conn);
            }
        };
        Ok(Running {
            conn,
            stream,
            read_shift: shift(READ_MIN),
            flush: false,
            // Whatever rang while it was parked is still on the doorbell; a drain costs little.
            drain: true,
            // What was read is handled at the first poll, as packets that came with CONNECT.
            started: rbuf.is_empty(),
            rbuf,
            settled: false,
            quiet_check: false,
            last_wake,
            deadline,
            pause: None,
            shutdown,
        })
    }
}

/// Reads what `socket` (non-blocking) already holds into `rbuf`, up to `READ_MAX`; returns how
/// many bytes. An end of stream or an error is left for the next read to find again.
fn read_waiting(socket: &std::net::TcpStream, rbuf: &mut BytesMut) -> usize {
    use std::io::Read;
    let mut stack = [0u8; STACK_READ];
    let mut read = 0;
    while rbuf.len() < READ_MAX {
        match (&*socket).read(&mut stack) {
            Ok(0) => break,
            Ok(n) => {
                rbuf.extend_from_slice(&stack[..n]);
                read += n;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    read
}

/// A connection past its handshake, with its transport. The read buffer exists only while it
/// holds part of a packet: an idle connection keeps no buffer at all, and reads into the stack
/// of whichever poll finds data.
pub(crate) struct Running {
    conn: Connection,
    stream: Stream,
    rbuf: BytesMut,
    /// Read size, as a power of two: up to `STACK_READ` on the stack, beyond into `rbuf` (see
    /// `poll_read`).
    read_shift: u8,
    /// A write left the buffer empty and the transport must still be flushed (WebSocket).
    flush: bool,
    /// The session may have messages to send.
    drain: bool,
    /// Packets that arrived with CONNECT are handled (at the first poll).
    started: bool,
    /// A new connection for the client id is about to take the session over: nothing more is
    /// read, so nothing the client sent after that connection's CONNECT counts here.
    settled: bool,
    /// A `Doorbell::QUIET` ring is due: the connection was active when it last went idle.
    quiet_check: bool,
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
        let deadline = Instant::now() + conn.keep_alive().unwrap_or_default();
        if conn.keep_alive().is_some() {
            conn.broker.keep_alives.file(deadline, &conn.doorbell);
        }
        Running {
            conn,
            stream,
            rbuf,
            read_shift: shift(READ_MIN),
            flush: false,
            // Whatever the session holds, and packets that came with CONNECT, go first.
            drain: true,
            started: false,
            settled: false,
            quiet_check: false,
            // Long ago: a connection is not active until it is woken again soon.
            last_wake: Instant::now().checked_sub(ACTIVE_WITHIN).unwrap_or_else(Instant::now),
            deadline,
            pause: None,
            shutdown,
        }
    }

    fn poll_exit(&mut self, cx: &mut Context<'_>) -> Poll<Stop> {
        if !self.started {
            self.started = true;
            if let Some(exit) = self.conn.process(&mut self.rbuf, &mut self.deadline) {
                return Poll::Ready(Stop::Exit(exit));
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
                        if self.may_park() {
                            return Poll::Ready(Stop::Quiet);
                        }
                    } else if !self.quiet_check && self.may_park() {
                        // Look again in a second, and park then if nothing woke it meanwhile.
                        self.quiet_check = true;
                        self.conn.broker.quiet_checks.file(now + ACTIVE_WITHIN, &self.conn.doorbell);
                    }
                    return Poll::Pending;
                }
                Turn::Exit(exit) => return Poll::Ready(Stop::Exit(exit)),
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
        self.quiet_check &= rung & Doorbell::QUIET == 0;
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
                    metrics::add(&conn.broker.metrics.traffic().bytes_sent, n as u64);
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
                    metrics::add(&self.conn.broker.metrics.traffic().bytes_received, n as u64);
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
                    metrics::add(&self.conn.broker.metrics.traffic().bytes_received, n as u64);
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
        let size = 1usize << self.read_shift;
        if size > STACK_READ {
            if self.rbuf.capacity() - self.rbuf.len() < size / 4 {
                self.rbuf.reserve(size);
            }
            let free = self.rbuf.capacity() - self.rbuf.len();
            let read = ready!(poll_read_buf(Pin::new(&mut self.stream), cx, &mut self.rbuf))?;
            if read == free {
                self.read_shift = (self.read_shift + 1).min(shift(READ_MAX));
            }
            return Poll::Ready(Ok(read));
        }
        let mut stack = [std::mem::MaybeUninit::<u8>::uninit(); STACK_READ];
        let mut buf = ReadBuf::uninit(&mut stack);
        ready!(Pin::new(&mut self.stream).poll_read(cx, &mut buf))?;
        let read = buf.filled().len();
        if read == STACK_READ {
            self.read_shift = shift(STACK_READ) + 1;
        }
        self.rbuf.extend_from_slice(buf.filled());
        Poll::Ready(Ok(read))
    }

    /// Whether the connection is plain TCP with nothing read, written, flushed, committed or
    /// paused on: all it waits for is its socket and its doorbell, which a bay watches as well.
    fn may_park(&self) -> bool {
        self.stream.is_tcp()
            && self.rbuf.is_empty()
            && !self.flush
            && !self.drain
            && !self.settled
            && self.pause.is_none()
            && self.conn.is_quiet()
    }

    /// Parks the connection (`parking`), or gives it back.
    #[allow(clippy::result_large_err)] // moved once per parking, not boxed for it
    fn park(self, tracked: &TaskTrackerToken) -> Result<(), Unparked> {
        let Running { conn, stream, last_wake, deadline, shutdown, .. } = self;
        let Stream::Tcp(tcp) = stream else {
            unreachable!("may_park said plain TCP");
        };
        let broker = Arc::clone(&conn.broker);
        let Ok(socket) = tcp.into_std() else { return Err(Unparked::Lost(conn)) };
        let runtime = tokio::runtime::Handle::current();
        let asleep = Asleep { conn: conn.into_rest(), socket, last_wake, deadline, shutdown };
        let idle = Idle { asleep, tracked: tracked.clone(), runtime };
        metrics::add(&broker.metrics.connections_parked, 1);
        let parking::Parking::Refused(idle) = parking::park(idle) else { return Ok(()) };
        metrics::sub(&broker.metrics.connections_parked, 1);
        // Its task still holds a token of its own.
        match idle.asleep.into_running() {
            Ok(running) => Err(Unparked::Running(running)),
            Err(conn) => Err(Unparked::Lost(conn)),
        }
    }

    /// Before an inactive connection sleeps: buffers that hold nothing are freed, so an idle
    /// connection costs only its state.
    fn release_buffers(&mut self) {
        if self.rbuf.is_empty() {
            self.rbuf = BytesMut::new();
            self.read_shift = shift(READ_MIN);
        }
        self.conn.release_buffers();
        // And the session's encoded queue, if it holds nothing.
        let ((), _) = self.conn.session.edit(Session::release_buffers);
    }
}

#[cfg(test)]
mod tests {
    /// What a connection that cannot park (TLS, WebSocket) keeps while idle is this state, in
    /// its tokio task, whose cell tokio rounds up to 128 bytes: at most 400 bytes here make a
    /// 512-byte cell (measured with heaptrack). A field that only some connections need belongs
    /// in `Extras`.
    #[test]
    fn an_idle_connection_keeps_a_small_state() {
        let size = std::mem::size_of::<super::ConnectionTask>();
        assert!(size <= 400, "ConnectionTask is {size} bytes");
    }
}
