//! Opening a connection: TCP, TLS when asked, CONNECT (with SCRAM-SHA-256 when asked), CONNACK.

use bytes::BytesMut;
use cauldron_proto::scram::{self, ClientExchange, ClientVerifier};
use cauldron_proto::{decode, Auth, Connect, Packet, Properties, ReasonCode};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::{Connected, Error, Options};

/// A byte stream to the server: plain TCP or TLS over it.
pub(crate) trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<S: AsyncRead + AsyncWrite + Unpin + Send> Stream for S {}
pub(crate) type BoxStream = Box<dyn Stream>;

/// The host part of `host:port` or `[v6]:port`, for TLS server name checks.
fn host(address: &str) -> &str {
    let host = address.rsplit_once(':').map_or(address, |(host, _)| host);
    host.trim_start_matches('[').trim_end_matches(']')
}

/// TCP, then TLS if configured, then a WebSocket if configured.
async fn open(options: &Options) -> Result<BoxStream, Error> {
    let invalid = |e: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, e);
    if options.tls_required && options.tls.is_none() {
        return Err(invalid("an mqtts:// or wss:// URL needs Options::tls (the CA to trust)".into()).into());
    }
    let tcp = TcpStream::connect(&options.address).await?;
    tcp.set_nodelay(true)?;
    let stream: BoxStream = match &options.tls {
        None => Box::new(tcp),
        Some(tls) => {
            let name = rustls_pki_types::ServerName::try_from(host(&options.address).to_owned())
                .map_err(|e| invalid(e.to_string()))?;
            let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::clone(&tls.config));
            Box::new(connector.connect(name, tcp).await?)
        }
    };
    match &options.websocket {
        None => Ok(stream),
        Some(path) => {
            let scheme = if options.tls.is_some() { "wss" } else { "ws" };
            let url = format!("{scheme}://{}{path}", options.address);
            Ok(Box::new(crate::ws::connect(stream, &url).await?))
        }
    }
}

/// Accept any packet size from the server; the server enforces its own limits.
pub(crate) const MAX_PACKET: usize = usize::MAX;

/// Where a SCRAM-SHA-256 exchange stands during the handshake.
enum ScramStep {
    Started(ClientExchange),
    Proved(ClientVerifier),
}

fn connect_packet(options: &Options, clean_start: bool) -> Connect {
    Connect {
        protocol: options.protocol,
        clean_start,
        keep_alive: options.keep_alive.as_secs().min(u64::from(u16::MAX)) as u16,
        client_id: options.client_id.clone(),
        will: options.will.clone().map(|w| cauldron_proto::Will {
            topic: w.topic,
            payload: w.payload,
            qos: w.qos,
            retain: w.retain,
            properties: w.properties,
        }),
        username: options.username.clone(),
        password: options.password.clone(),
        properties: options.properties.clone(),
        bridge: options.bridge,
    }
}

/// Connects and completes the handshake within the connect timeout. Bytes that arrived after
/// CONNACK are left in `rbuf`.
pub(crate) async fn connect(
    options: &Options,
    clean_start: bool,
    rbuf: &mut BytesMut,
) -> Result<(BoxStream, Connected), Error> {
    let handshake = async {
        let mut stream = open(options).await?;
        let mut connect = connect_packet(options, clean_start);
        let mut scram = None;
        if let Some((user, password)) = &options.scram {
            let (exchange, client_first) = ClientExchange::start(user, password)
                .map_err(|_| Error::Refused(ReasonCode::UnspecifiedError))?;
            connect.properties.authentication_method = Some(scram::METHOD.into());
            connect.properties.authentication_data = Some(client_first.into());
            scram = Some(ScramStep::Started(exchange));
        }
        let mut wbuf = BytesMut::new();
        let connect = Packet::Connect(Box::new(connect));
        crate::state::trace_packet("sending", &connect);
        connect.encode(options.protocol, &mut wbuf)?;
        stream.write_all(&wbuf).await?;
        stream.flush().await?;
        loop {
            if let Some(packet) = decode(rbuf, options.protocol, MAX_PACKET)? {
                crate::state::trace_packet("received", &packet);
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
                        let reply =
                            Packet::Auth(Auth { reason: ReasonCode::ContinueAuthentication, properties });
                        let mut wbuf = BytesMut::new();
                        crate::state::trace_packet("sending", &reply);
                        reply.encode(options.protocol, &mut wbuf)?;
                        stream.write_all(&wbuf).await?;
                        stream.flush().await?;
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
                        Connected { session_present: ack.session_present, properties: ack.properties },
                    )),
                    Packet::ConnAck(ack) => Err(Error::Refused(ack.code)),
                    other => Err(Error::UnexpectedPacket(other.packet_type())),
                };
            }
            if stream.read_buf(rbuf).await? == 0 {
                return Err(Error::Closed);
            }
        }
    };
    tokio::time::timeout(options.connect_timeout, handshake).await.map_err(|_| Error::Timeout)?
}
