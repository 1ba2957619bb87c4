//! The background task that owns the connection: it encodes commands, decodes what the server
//! sends, answers keep alive, and, when asked to, reconnects with back-off and resumes.

use std::time::Duration;

use cauldron_proto::Packet;
use tokio::io::{AsyncReadExt, AsyncWriteExt, WriteHalf};
use tokio::sync::mpsc;

use crate::handshake::{self, BoxStream};
use crate::state::{Incoming, State, Taken};
use crate::{Command, Connected, Error, Options};

/// How one connection ended.
enum Ended {
    /// DISCONNECT sent, or every handle dropped: the task is done.
    Done,
    /// The network or the server ended it.
    Lost,
}

/// Connects (failing if the first connection fails) and spawns the task.
pub(crate) async fn start(
    options: Options,
    commands: mpsc::Receiver<Command>,
    messages: mpsc::Sender<Incoming>,
    taken: mpsc::UnboundedReceiver<Taken>,
) -> Result<Connected, Error> {
    let mut state = State::new(options.protocol);
    let (stream, connected) = handshake::connect(&options, options.clean_start, &mut state.rbuf).await?;
    let channels = Channels { commands, messages, taken };
    tokio::spawn(run(options, stream, state, channels));
    Ok(connected)
}

/// What the task shares with the handles: commands in, messages out, and word of each message
/// the application took (to acknowledge it).
struct Channels {
    commands: mpsc::Receiver<Command>,
    messages: mpsc::Sender<Incoming>,
    taken: mpsc::UnboundedReceiver<Taken>,
}

async fn run(options: Options, mut stream: BoxStream, mut state: State, mut channels: Channels) {
    loop {
        if let Ended::Done = serve(stream, &mut state, options.keep_alive, &mut channels).await {
            break;
        }
        let Some(reconnect) = options.reconnect else { break };
        // Back off from `initial` to `max`, doubling; the session is resumed (clean start off).
        let mut delay = reconnect.initial;
        stream = loop {
            tokio::time::sleep(delay).await;
            if channels.commands.is_closed() {
                state.fail_all();
                return;
            }
            match handshake::connect(&options, false, &mut state.rbuf).await {
                Ok((stream, connected)) => {
                    state.resume(connected.session_present);
                    break stream;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "reconnect failed; retrying in {delay:?}");
                    delay = (delay * 2).min(reconnect.max);
                }
            }
        };
    }
    state.fail_all();
}

/// Serves one connection until it ends.
async fn serve(stream: BoxStream, state: &mut State, keep_alive: Duration, channels: &mut Channels) -> Ended {
    let Channels { commands, messages, taken } = channels;
    let (mut reader, mut writer) = tokio::io::split(stream);
    let period = if keep_alive.is_zero() { Duration::from_secs(86400) } else { keep_alive };
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    // Packets that arrived in the same read as CONNACK; their acks go out with the first write.
    let mut keep_going = state.process(messages).await;
    loop {
        if !keep_going {
            return Ended::Lost;
        }
        if !state.wbuf.is_empty() {
            // Flushed: TLS and WebSocket streams buffer what is written.
            if writer.write_all(&state.wbuf).await.is_err() || writer.flush().await.is_err() {
                return Ended::Lost;
            }
            state.wbuf.clear();
        }
        if state.rbuf.capacity() - state.rbuf.len() < 1024 {
            state.rbuf.reserve(4096);
        }
        keep_going = tokio::select! {
            command = commands.recv() => match command {
                Some(Command::Disconnect(disconnect, reply)) => {
                    // What the application took before it asked to go is acknowledged first.
                    while let Ok(t) = taken.try_recv() {
                        state.taken(t);
                    }
                    let _ = reply.send(disconnect_now(state, &mut writer, disconnect).await);
                    return Ended::Done;
                }
                Some(command) => {
                    state.command(command);
                    true
                }
                // Every handle dropped: close without DISCONNECT.
                None => return Ended::Done,
            },
            read = reader.read_buf(&mut state.rbuf) => match read {
                Ok(0) | Err(_) => false,
                Ok(_) => state.process(messages).await,
            },
            Some(t) = taken.recv() => {
                state.taken(t);
                true
            }
            _ = ping.tick(), if !keep_alive.is_zero() => state.send(&Packet::PingReq).is_ok(),
        };
    }
}

async fn disconnect_now(
    state: &mut State,
    writer: &mut WriteHalf<BoxStream>,
    disconnect: cauldron_proto::Disconnect,
) -> Result<(), Error> {
    state.send(&Packet::Disconnect(disconnect))?;
    writer.write_all(&state.wbuf).await?;
    writer.shutdown().await?;
    Ok(())
}
