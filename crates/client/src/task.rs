//! The background task that owns the socket: it encodes commands, decodes what the server
//! sends, completes QoS flows and answers keep alive.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use bytes::BytesMut;
use cauldron_proto::scram::{self, ClientExchange, ClientVerifier};
use cauldron_proto::{
    decode, Ack, Auth, Connect, Packet, Properties, Protocol, Publish, QoS, ReasonCode, Subscribe,
    Unsubscribe,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

use crate::{Command, Connected, Error, Options};

type Reply<T> = oneshot::Sender<Result<T, Error>>;

/// Where a SCRAM-SHA-256 exchange stands during the handshake.
enum ScramStep {
    Started(ClientExchange),
    Proved(ClientVerifier),
}

/// Accept any packet size from the server; the server enforces its own limits.
const MAX_PACKET: usize = usize::MAX;

struct State {
    protocol: Protocol,
    rbuf: BytesMut,
    wbuf: BytesMut,
    next_packet_id: u16,
    publishes: HashMap<u16, (QoS, Reply<Option<ReasonCode>>)>,
    subscribes: HashMap<u16, Reply<Vec<ReasonCode>>>,
    unsubscribes: HashMap<u16, Reply<Vec<ReasonCode>>>,
    /// Incoming QoS 2 ids delivered but not yet released.
    incoming_qos2: HashSet<u16>,
}

pub(crate) async fn start(
    options: Options,
    commands: mpsc::Receiver<Command>,
    messages: mpsc::Sender<Publish>,
) -> Result<Connected, Error> {
    let handshake = async {
        let mut stream = TcpStream::connect(&options.address).await?;
        stream.set_nodelay(true)?;
        let mut state = State {
            protocol: options.protocol,
            rbuf: BytesMut::with_capacity(4096),
            wbuf: BytesMut::new(),
            next_packet_id: 1,
            publishes: HashMap::new(),
            subscribes: HashMap::new(),
            unsubscribes: HashMap::new(),
            incoming_qos2: HashSet::new(),
        };
        let connect = Connect {
            protocol: options.protocol,
            clean_start: options.clean_start,
            keep_alive: options.keep_alive.as_secs().min(u64::from(u16::MAX)) as u16,
            client_id: options.client_id.clone(),
            will: options.will.clone().map(|w| cauldron_proto::Will {
                topic: w.topic,
                payload: w.payload,
                qos: w.qos,
                retain: w.retain,
                properties: Properties::default(),
            }),
            username: options.username.clone(),
            password: options.password.clone(),
            properties: options.properties.clone(),
        };
        let mut connect = connect;
        let mut scram = None;
        if let Some((user, password)) = &options.scram {
            let (exchange, client_first) = ClientExchange::start(user, password)
                .map_err(|_| Error::Refused(ReasonCode::UnspecifiedError))?;
            connect.properties.authentication_method = Some(scram::METHOD.into());
            connect.properties.authentication_data = Some(client_first.into());
            scram = Some(ScramStep::Started(exchange));
        }
        Packet::Connect(Box::new(connect)).encode(options.protocol, &mut state.wbuf)?;
        stream.write_all(&state.wbuf).await?;
        state.wbuf.clear();
        loop {
            if let Some(packet) = decode(&mut state.rbuf, options.protocol, MAX_PACKET)? {
                let packet = match (packet, scram.take()) {
                    // The server's challenge: answer with our proof and wait for CONNACK.
                    (Packet::Auth(auth), Some(ScramStep::Started(exchange))) => {
                        let data = auth.properties.authentication_data.unwrap_or_default();
                        let (verifier, client_final) =
                            exchange.finish(&data).map_err(|_| Error::Refused(ReasonCode::NotAuthorized))?;
                        let properties = Properties {
                            authentication_method: Some(scram::METHOD.into()),
                            authentication_data: Some(client_final.into()),
                            ..Properties::default()
                        };
                        let reply = Auth { reason: ReasonCode::ContinueAuthentication, properties };
                        Packet::Auth(reply).encode(options.protocol, &mut state.wbuf)?;
                        stream.write_all(&state.wbuf).await?;
                        state.wbuf.clear();
                        scram = Some(ScramStep::Proved(verifier));
                        continue;
                    }
                    // The server proves it knew our credential, or it is an impostor.
                    (Packet::ConnAck(ack), Some(ScramStep::Proved(verifier)))
                        if ack.code == ReasonCode::Success =>
                    {
                        let data = ack.properties.authentication_data.clone().unwrap_or_default();
                        verifier.verify(&data).map_err(|_| Error::Refused(ReasonCode::NotAuthorized))?;
                        Packet::ConnAck(ack)
                    }
                    (packet, _) => packet,
                };
                return match packet {
                    Packet::ConnAck(ack) if ack.code == ReasonCode::Success => Ok((
                        stream,
                        state,
                        Connected { session_present: ack.session_present, properties: ack.properties },
                    )),
                    Packet::ConnAck(ack) => Err(Error::Refused(ack.code)),
                    other => Err(Error::UnexpectedPacket(other.packet_type())),
                };
            }
            if stream.read_buf(&mut state.rbuf).await? == 0 {
                return Err(Error::Closed);
            }
        }
    };
    let (stream, state, connected) =
        tokio::time::timeout(options.connect_timeout, handshake).await.map_err(|_| Error::Timeout)??;
    tokio::spawn(run(stream, state, options.keep_alive, commands, messages));
    Ok(connected)
}

async fn run(
    stream: TcpStream,
    mut state: State,
    keep_alive: Duration,
    mut commands: mpsc::Receiver<Command>,
    messages: mpsc::Sender<Publish>,
) {
    let (mut reader, mut writer) = stream.into_split();
    let period = if keep_alive.is_zero() { Duration::from_secs(86400) } else { keep_alive };
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    // Packets that arrived in the same read as CONNACK; their acks go out with the first write.
    let mut keep_going = state.process(&messages).await;
    loop {
        if !keep_going {
            return;
        }
        if !state.wbuf.is_empty() {
            if writer.write_all(&state.wbuf).await.is_err() {
                return;
            }
            state.wbuf.clear();
        }
        if state.rbuf.capacity() - state.rbuf.len() < 1024 {
            state.rbuf.reserve(4096);
        }
        keep_going = tokio::select! {
            command = commands.recv() => match command {
                Some(Command::Disconnect(disconnect, reply)) => {
                    let sent = state.send(&Packet::Disconnect(disconnect));
                    let written = async { writer.write_all(&state.wbuf).await?; writer.shutdown().await };
                    let _ = reply.send(sent.and(written.await.map_err(Error::from)));
                    return;
                }
                Some(command) => {
                    state.command(command);
                    true
                }
                // Every handle dropped: close without DISCONNECT.
                None => false,
            },
            read = reader.read_buf(&mut state.rbuf) => match read {
                Ok(0) | Err(_) => false,
                Ok(_) => state.process(&messages).await,
            },
            _ = ping.tick(), if !keep_alive.is_zero() => state.send(&Packet::PingReq).is_ok(),
        };
    }
}

impl State {
    fn send(&mut self, packet: &Packet) -> Result<(), Error> {
        packet.encode(self.protocol, &mut self.wbuf).map_err(Error::from)
    }

    fn packet_id(&mut self) -> u16 {
        loop {
            let id = self.next_packet_id;
            self.next_packet_id = id.checked_add(1).unwrap_or(1);
            let busy = self.publishes.contains_key(&id)
                || self.subscribes.contains_key(&id)
                || self.unsubscribes.contains_key(&id);
            if !busy {
                return id;
            }
        }
    }

    fn command(&mut self, command: Command) {
        match command {
            Command::Publish(mut publish, reply) => {
                if publish.qos == QoS::AtMostOnce {
                    publish.packet_id = None;
                    let _ = reply.send(self.send(&Packet::Publish(publish)).map(|_| None));
                    return;
                }
                let id = self.packet_id();
                publish.packet_id = Some(id);
                match self.send(&Packet::Publish(publish.clone())) {
                    Ok(()) => {
                        self.publishes.insert(id, (publish.qos, reply));
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                }
            }
            Command::Subscribe(filters, properties, reply) => {
                let packet_id = self.packet_id();
                match self.send(&Packet::Subscribe(Subscribe { packet_id, filters, properties })) {
                    Ok(()) => {
                        self.subscribes.insert(packet_id, reply);
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                }
            }
            Command::Unsubscribe(filters, reply) => {
                let packet_id = self.packet_id();
                let unsubscribe = Unsubscribe { packet_id, filters, properties: Properties::default() };
                match self.send(&Packet::Unsubscribe(unsubscribe)) {
                    Ok(()) => {
                        self.unsubscribes.insert(packet_id, reply);
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                }
            }
            Command::Raw(packet) => {
                let _ = self.send(&packet);
            }
            // The task loop handles DISCONNECT itself, as it ends the connection.
            Command::Disconnect(_, reply) => {
                let _ = reply.send(Err(Error::Closed));
            }
        }
    }

    /// Handles every complete packet read; false ends the connection.
    async fn process(&mut self, messages: &mpsc::Sender<Publish>) -> bool {
        loop {
            let packet = match decode(&mut self.rbuf, self.protocol, MAX_PACKET) {
                Ok(Some(packet)) => packet,
                Ok(None) => return true,
                Err(_) => return false,
            };
            match packet {
                Packet::Publish(publish) => {
                    let deliver = match (publish.qos, publish.packet_id) {
                        (QoS::AtLeastOnce, Some(id)) => {
                            let _ = self.send(&Packet::PubAck(Ack::new(id)));
                            true
                        }
                        (QoS::ExactlyOnce, Some(id)) => {
                            let _ = self.send(&Packet::PubRec(Ack::new(id)));
                            self.incoming_qos2.insert(id)
                        }
                        _ => true,
                    };
                    if deliver {
                        // A full channel means the application is slow: wait for it (backpressure).
                        let _ = messages.send(publish).await;
                    }
                }
                Packet::PubRel(ack) => {
                    self.incoming_qos2.remove(&ack.packet_id);
                    let _ = self.send(&Packet::PubComp(Ack::new(ack.packet_id)));
                }
                Packet::PubAck(ack) => self.complete(ack.packet_id, ack.reason),
                Packet::PubRec(ack) => {
                    if ack.reason.is_error() {
                        self.complete(ack.packet_id, ack.reason);
                    } else {
                        let _ = self.send(&Packet::PubRel(Ack::new(ack.packet_id)));
                    }
                }
                Packet::PubComp(ack) => self.complete(ack.packet_id, ack.reason),
                Packet::SubAck(ack) => {
                    if let Some(reply) = self.subscribes.remove(&ack.packet_id) {
                        let _ = reply.send(Ok(ack.codes));
                    }
                }
                Packet::UnsubAck(ack) => {
                    if let Some(reply) = self.unsubscribes.remove(&ack.packet_id) {
                        let _ = reply.send(Ok(ack.codes));
                    }
                }
                Packet::Disconnect(_) => return false,
                _ => {}
            }
        }
    }

    fn complete(&mut self, packet_id: u16, reason: ReasonCode) {
        if let Some((_, reply)) = self.publishes.remove(&packet_id) {
            let _ = reply.send(Ok(Some(reason)));
        }
    }
}
