//! Test harness: a broker in-process on 127.0.0.1:0, and a raw MQTT peer for edge cases.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use cauldron_broker::{run, Broker, CancellationToken, Config};
use cauldron_client::{Client, Messages, Options};
use cauldron_proto::{
    decode, Ack, ByteString, Connect, Packet, Properties, Protocol, Publish, QoS, SubOptions, Subscribe,
    Subscription,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How long a test waits for something that should happen.
pub const WAIT: Duration = Duration::from_secs(5);
/// How long a test waits to be sure something does not happen.
pub const QUIET: Duration = Duration::from_millis(300);

pub struct TestBroker {
    pub addr: SocketAddr,
    pub broker: Arc<Broker>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl TestBroker {
    /// Defaults, but no `$SYS` tree, so retained counts are the test's own.
    pub async fn start() -> TestBroker {
        TestBroker::with_config(Config { sys_interval: 0, ..Config::default() }).await
    }

    pub async fn with_config(config: Config) -> TestBroker {
        TestBroker::with_broker(Broker::new(config)).await
    }

    /// Serves a broker the test built itself (its own store, say).
    pub async fn with_broker(broker: Arc<Broker>) -> TestBroker {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn({
            let (broker, shutdown) = (Arc::clone(&broker), shutdown.clone());
            async move { run(broker, vec![listener], shutdown).await.unwrap() }
        });
        TestBroker { addr, broker, shutdown, task }
    }

    pub fn options(&self, client_id: &str) -> Options {
        Options::new(self.addr.to_string(), client_id)
    }

    pub async fn client(&self, client_id: &str) -> (Client, Messages) {
        Client::connect(self.options(client_id)).await.unwrap()
    }

    pub async fn raw(&self) -> Raw {
        Raw::connect(self.addr, Protocol::V3_1_1).await
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(WAIT, self.task).await.unwrap().unwrap();
    }
}

/// Receives the next message or fails the test after `WAIT`.
pub async fn next(messages: &mut Messages) -> Publish {
    tokio::time::timeout(WAIT, messages.recv())
        .await
        .expect("timed out waiting for a message")
        .expect("connection closed")
}

/// Asserts that no message arrives within `QUIET`.
pub async fn nothing(messages: &mut Messages) {
    if let Ok(Some(m)) = tokio::time::timeout(QUIET, messages.recv()).await {
        panic!("unexpected message on {}: {:?}", m.topic, m.payload);
    }
}

/// Polls `cond` until it holds, failing after `WAIT`.
pub async fn eventually(mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !cond() {
        assert!(tokio::time::Instant::now() < deadline, "condition not reached in time");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A peer that speaks MQTT packet by packet, for cases a well-behaved client never produces.
pub struct Raw {
    pub stream: TcpStream,
    pub protocol: Protocol,
    buf: BytesMut,
}

impl Raw {
    pub async fn connect(addr: SocketAddr, protocol: Protocol) -> Raw {
        let stream = TcpStream::connect(addr).await.unwrap();
        Raw { stream, protocol, buf: BytesMut::new() }
    }

    /// The server end of an accepted connection: a test playing a bridge's remote broker.
    pub fn accepted(stream: TcpStream, protocol: Protocol) -> Raw {
        Raw { stream, protocol, buf: BytesMut::new() }
    }

    pub fn connect_packet(client_id: &str, clean: bool, protocol: Protocol) -> Connect {
        Connect {
            protocol,
            clean_start: clean,
            keep_alive: 0,
            client_id: client_id.into(),
            will: None,
            username: None,
            password: None,
            properties: Properties::default(),
            bridge: false,
        }
    }

    /// Connects with the given CONNECT and returns the CONNACK.
    pub async fn handshake(addr: SocketAddr, connect: Connect) -> (Raw, cauldron_proto::ConnAck) {
        let mut raw = Raw::connect(addr, connect.protocol).await;
        raw.send(Packet::Connect(Box::new(connect))).await;
        match raw.recv().await {
            Some(Packet::ConnAck(ack)) => (raw, ack),
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    pub async fn session(addr: SocketAddr, client_id: &str, clean: bool) -> (Raw, bool) {
        let (raw, ack) = Raw::handshake(addr, Raw::connect_packet(client_id, clean, Protocol::V3_1_1)).await;
        assert_eq!(ack.code, cauldron_proto::ReasonCode::Success);
        (raw, ack.session_present)
    }

    pub async fn send(&mut self, packet: Packet) {
        let mut buf = BytesMut::new();
        packet.encode(self.protocol, &mut buf).unwrap();
        self.send_bytes(&buf).await;
    }

    pub async fn send_bytes(&mut self, bytes: &[u8]) {
        // The server may already have closed; the test then checks for that.
        let _ = self.stream.write_all(bytes).await;
    }

    /// The next packet, or `None` if the server closed the connection. Fails after `WAIT`.
    pub async fn recv(&mut self) -> Option<Packet> {
        tokio::time::timeout(WAIT, self.recv_inner()).await.expect("timed out waiting for a packet")
    }

    async fn recv_inner(&mut self) -> Option<Packet> {
        loop {
            if let Some(packet) =
                decode(&mut self.buf, self.protocol, usize::MAX).expect("server sent a malformed packet")
            {
                return Some(packet);
            }
            match self.stream.read_buf(&mut self.buf).await {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }

    /// Expects the server to close the connection (after any packets it sends first).
    pub async fn expect_closed(&mut self) -> Vec<Packet> {
        let mut before = Vec::new();
        while let Some(packet) = self.recv().await {
            before.push(packet);
        }
        before
    }

    /// Asserts that nothing arrives within `QUIET`.
    pub async fn expect_silence(&mut self) {
        if let Ok(p) = tokio::time::timeout(QUIET, self.recv_inner()).await {
            panic!("unexpected {p:?}");
        }
    }

    pub async fn subscribe(&mut self, filter: &str, qos: QoS) -> cauldron_proto::SubAck {
        let options = SubOptions { qos, ..SubOptions::default() };
        let filters = vec![Subscription { filter: ByteString::from(filter), options }];
        self.send(Packet::Subscribe(Subscribe { packet_id: 1, filters, properties: Properties::default() }))
            .await;
        match self.recv().await {
            Some(Packet::SubAck(ack)) => ack,
            other => panic!("expected SUBACK, got {other:?}"),
        }
    }

    pub async fn publish(&mut self, topic: &str, payload: &str, qos: QoS, packet_id: Option<u16>) {
        let mut publish = Publish::new(topic, payload.as_bytes().to_vec());
        publish.qos = qos;
        publish.packet_id = packet_id;
        self.send(Packet::Publish(publish)).await;
    }

    pub async fn expect_publish(&mut self) -> Publish {
        match self.recv().await {
            Some(Packet::Publish(p)) => p,
            other => panic!("expected PUBLISH, got {other:?}"),
        }
    }

    pub async fn ack(&mut self, packet: fn(Ack) -> Packet, packet_id: u16) {
        self.send(packet(Ack::new(packet_id))).await;
    }
}
