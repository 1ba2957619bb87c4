#![warn(missing_docs)]
//! An async MQTT 3.1 / 3.1.1 / 5.0 client over the cauldron codec.
//!
//! [`Client::connect`] opens a connection and returns a [`Client`] handle (cheap to clone, usable
//! from any task) and a [`Messages`] stream of incoming PUBLISH packets. A background task owns
//! the socket: it answers keep alive, acknowledges incoming QoS 1/2 and completes outgoing flows.
//!
//! ```no_run
//! # async fn example() -> Result<(), cauldron_client::Error> {
//! use cauldron_client::{Client, Options, QoS};
//! let (client, mut messages) = Client::connect(Options::new("127.0.0.1:1883", "converter")).await?;
//! client.subscribe("temp/celsius", QoS::AtLeastOnce).await?;
//! while let Some(msg) = messages.recv().await {
//!     let celsius: f64 = std::str::from_utf8(&msg.payload).unwrap_or("").trim().parse().unwrap_or(f64::NAN);
//!     client.publish("temp/fahrenheit", format!("{}", celsius * 9.0 / 5.0 + 32.0), QoS::AtLeastOnce, false).await?;
//! }
//! # Ok(()) }
//! ```

mod dispatch;
mod handshake;
mod options;
mod state;
mod task;
mod tls;
/// MQTT over WebSocket: the byte-stream adapter ([`ws::WsStream`]); the client uses it for
/// `ws://` and `wss://` (see [`Options::websocket`]).
pub mod ws;

use cauldron_proto::{
    ByteString, Bytes, DecodeError, EncodeError, Packet, Properties, Publish, ReasonCode, SubOptions,
    Subscription,
};
use tokio::sync::{mpsc, oneshot};

/// The codec, its packet types and [`Protocol`]/[`QoS`], re-exported for building packets.
pub use cauldron_proto::{self as proto, Protocol, QoS};
/// A handler per topic filter ([`Dispatcher`]).
pub use dispatch::Dispatcher;
/// Connection options ([`Options`]), reconnection ([`Reconnect`]) and the will ([`Will`]).
pub use options::{Options, Reconnect, Will};
/// TLS settings ([`Tls`]).
pub use tls::{Tls, TlsVersion};

/// What can go wrong talking to a broker.
///
/// ```no_run
/// # async fn demo() {
/// use cauldron_client::{Client, Error, Options, proto::ReasonCode};
/// match Client::connect(Options::new("localhost:1883", "x").credentials("jane", "wrong")).await {
///     Err(Error::Refused(ReasonCode::BadUserNameOrPassword | ReasonCode::NotAuthorized)) => eprintln!("check the password"),
///     Err(e) => eprintln!("cannot connect: {e}"),
///     Ok(_) => {}
/// }
/// # }
/// ```
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The socket failed (refused, reset, TLS or WebSocket handshake failure...).
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The server sent bytes that are not a valid MQTT packet.
    #[error("malformed packet from the server: {0}")]
    Decode(#[from] DecodeError),
    /// What was asked for cannot be put into a packet (too long a topic, say).
    #[error("packet cannot be encoded: {0}")]
    Encode(#[from] EncodeError),
    /// CONNACK refused the connection with this code (3.1.1 return codes are mapped to 5.0's).
    #[error("connection refused: {0:?}")]
    Refused(ReasonCode),
    /// The first packet from the server was not CONNACK (or AUTH during enhanced auth).
    #[error("server sent {0:?} where CONNACK was expected")]
    UnexpectedPacket(cauldron_proto::PacketType),
    /// The server refused a request (e.g. a SCRAM proof that does not verify).
    #[error("the server rejected the request: {0:?}")]
    Rejected(ReasonCode),
    /// The connection is gone (and no reconnect was configured, or the client was dropped).
    #[error("the connection is closed")]
    Closed,
    /// No CONNACK within [`Options::connect_timeout`].
    #[error("timed out")]
    Timeout,
}

/// What the server said in its CONNACK.
///
/// ```no_run
/// # async fn demo() -> Result<(), cauldron_client::Error> {
/// let options = cauldron_client::Options::new("localhost:1883", "tracker").clean_start(false);
/// let (client, _) = cauldron_client::Client::connect(options).await?;
/// if !client.connected().session_present {
///     // The server kept nothing: subscribe again.
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Connected {
    /// The server resumed a session it kept for this client id [MQTT-3.2.2-2].
    pub session_present: bool,
    /// MQTT 5 CONNACK properties (assigned client id, limits, server keep alive...).
    pub properties: Properties,
}

/// The server's answer to a request already sent ([`Client::publish_with_id`]); dropping it
/// leaves the request to complete unobserved.
pub struct Answer<T>(oneshot::Receiver<Result<T, Error>>);

impl<T> std::future::Future for Answer<T> {
    type Output = Result<T, Error>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.0).poll(cx).map(|answer| answer.unwrap_or(Err(Error::Closed)))
    }
}

/// A request from a handle to the connection task; each carries where to send the outcome.
pub(crate) enum Command {
    /// `true`: the caller chose the packet id (and DUP), see [`Client::publish_with_id`].
    Publish(Publish, bool, oneshot::Sender<Result<Option<ReasonCode>, Error>>),
    /// With the packet id the caller chose, if any.
    Subscribe(Vec<Subscription>, Properties, Option<u16>, oneshot::Sender<Result<Vec<ReasonCode>, Error>>),
    Unsubscribe(Vec<ByteString>, Option<u16>, oneshot::Sender<Result<Vec<ReasonCode>, Error>>),
    Disconnect(cauldron_proto::Disconnect, oneshot::Sender<Result<(), Error>>),
    /// Send this packet as it is (for tests of server behaviour).
    Raw(Packet),
}

/// A handle to a connected client. Dropping every handle closes the socket without
/// DISCONNECT, which makes the broker publish the will.
///
/// ```no_run
/// # async fn demo() -> Result<(), cauldron_client::Error> {
/// use cauldron_client::{Client, Options, QoS};
/// let (client, _messages) = Client::connect(Options::new("localhost:1883", "ticker")).await?;
/// // Clones share the one connection: publish from as many tasks as you like.
/// let ticker = client.clone();
/// tokio::spawn(async move { ticker.publish("clock/tick", "1", QoS::AtMostOnce, false).await });
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Client {
    commands: mpsc::Sender<Command>,
    connected: Connected,
}

/// Incoming application messages, in the order the server sent them (see [`Messages::recv`]).
/// A QoS 1/2 message is acknowledged (PUBACK / PUBREC) when [`Messages::recv`] hands it over,
/// not when it arrives: what waits here unread when `Messages` is dropped stays the server's to
/// deliver again, so a client with a stored session loses none of it.
pub struct Messages {
    rx: mpsc::Receiver<state::Incoming>,
    taken: mpsc::UnboundedSender<state::Taken>,
}

impl Messages {
    /// The next message, or `None` once the connection has ended.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), cauldron_client::Error> {
    /// # let (client, mut messages) = cauldron_client::Client::connect(cauldron_client::Options::new("localhost:1883", "x")).await?;
    /// while let Some(message) = messages.recv().await {
    ///     println!("{}: {}", message.topic, String::from_utf8_lossy(&message.payload));
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn recv(&mut self) -> Option<Publish> {
        let (publish, taken) = self.rx.recv().await?;
        if let Some(taken) = taken {
            // The task gone means the connection is too; the server sends the message again.
            let _ = self.taken.send(taken);
        }
        Some(publish)
    }
}

impl Client {
    /// Connects, sends CONNECT and waits for a successful CONNACK.
    ///
    /// ```no_run
    /// use cauldron_client::{Client, Options, Protocol};
    /// # async fn demo() -> Result<(), cauldron_client::Error> {
    /// let options = Options::new("localhost:1883", "thermostat").protocol(Protocol::V5);
    /// let (client, messages) = Client::connect(options).await?;
    /// println!("session present: {}", client.connected().session_present);
    /// # Ok(()) }
    /// ```
    pub async fn connect(options: Options) -> Result<(Client, Messages), Error> {
        let (commands, command_rx) = mpsc::channel(64);
        let (message_tx, rx) = mpsc::channel(1024);
        // Unbounded, yet never longer than the messages the server has in flight to this client.
        let (taken, taken_rx) = mpsc::unbounded_channel();
        let connected = task::start(options, command_rx, message_tx, taken_rx).await?;
        Ok((Client { commands, connected }, Messages { rx, taken }))
    }

    /// The server's CONNACK.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), cauldron_client::Error> {
    /// let options = cauldron_client::Options::new("localhost:1883", "").protocol(cauldron_client::Protocol::V5);
    /// let (client, _) = cauldron_client::Client::connect(options).await?;
    /// println!("assigned id: {:?}", client.connected().properties.assigned_client_identifier);
    /// # Ok(()) }
    /// ```
    pub fn connected(&self) -> &Connected {
        &self.connected
    }

    async fn request<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, Error>>) -> Command,
    ) -> Result<T, Error> {
        let (tx, rx) = oneshot::channel();
        self.commands.send(make(tx)).await.map_err(|_| Error::Closed)?;
        rx.await.map_err(|_| Error::Closed)?
    }

    /// Publishes and, for QoS 1 and 2, waits until the flow completes (PUBACK / PUBCOMP).
    ///
    /// ```no_run
    /// # use cauldron_client::{Client, QoS};
    /// # async fn demo(client: Client) -> Result<(), cauldron_client::Error> {
    /// client.publish("temp/celsius", "21.5", QoS::AtLeastOnce, true).await?;
    /// # Ok(()) }
    /// ```
    pub async fn publish(
        &self,
        topic: impl Into<ByteString>,
        payload: impl Into<Bytes>,
        qos: QoS,
        retain: bool,
    ) -> Result<(), Error> {
        let mut publish = Publish::new(topic, payload);
        publish.qos = qos;
        publish.retain = retain;
        self.publish_packet(publish).await.map(|_| ())
    }

    /// Publishes a prepared packet (properties included; the packet id is assigned here) and
    /// returns the reason code of the acknowledgement for QoS 1 and 2.
    ///
    /// ```no_run
    /// # use cauldron_client::{Client, QoS, proto::{Properties, Publish}};
    /// # async fn demo(client: Client) -> Result<(), cauldron_client::Error> {
    /// let mut publish = Publish::new("owntracks/jane/phone", r#"{"_type":"location"}"#);
    /// publish.qos = QoS::AtLeastOnce;
    /// publish.properties = Properties { message_expiry_interval: Some(3600), ..Properties::default() };
    /// let reason = client.publish_packet(publish).await?;
    /// # Ok(()) }
    /// ```
    pub async fn publish_packet(&self, publish: Publish) -> Result<Option<ReasonCode>, Error> {
        self.request(|tx| Command::Publish(publish, false, tx)).await
    }

    /// Sends PUBLISH with the packet identifier and DUP flag already in `publish`, for a
    /// program that keeps its own session state across connections (a bridge resending what a
    /// previous connection left unacknowledged, with its original id [MQTT-4.4.0-1]). Returns
    /// once the packet is queued, in call order; the [`Answer`] is the acknowledgement. The id
    /// must not be in use by this client's own requests.
    ///
    /// ```no_run
    /// # use cauldron_client::{Client, QoS, proto::Publish};
    /// # async fn demo(client: Client) -> Result<(), cauldron_client::Error> {
    /// let mut again = Publish::new("site/t", "21.5");
    /// (again.qos, again.packet_id, again.dup) = (QoS::AtLeastOnce, Some(7), true);
    /// let acknowledged = client.publish_with_id(again).await?;
    /// acknowledged.await?;
    /// # Ok(()) }
    /// ```
    pub async fn publish_with_id(&self, publish: Publish) -> Result<Answer<Option<ReasonCode>>, Error> {
        self.enqueue(|tx| Command::Publish(publish, true, tx)).await
    }

    /// Sends SUBSCRIBE with a packet identifier the caller chose (see
    /// [`Client::publish_with_id`]); the [`Answer`] is the SUBACK's reason codes.
    pub async fn subscribe_with_id(
        &self,
        packet_id: u16,
        filters: Vec<Subscription>,
        properties: Properties,
    ) -> Result<Answer<Vec<ReasonCode>>, Error> {
        self.enqueue(|tx| Command::Subscribe(filters, properties, Some(packet_id), tx)).await
    }

    /// Sends UNSUBSCRIBE with a packet identifier the caller chose (see
    /// [`Client::publish_with_id`]); the [`Answer`] is the UNSUBACK's reason codes.
    pub async fn unsubscribe_with_id(
        &self,
        packet_id: u16,
        filters: Vec<ByteString>,
    ) -> Result<Answer<Vec<ReasonCode>>, Error> {
        self.enqueue(|tx| Command::Unsubscribe(filters, Some(packet_id), tx)).await
    }

    async fn enqueue<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, Error>>) -> Command,
    ) -> Result<Answer<T>, Error> {
        let (tx, rx) = oneshot::channel();
        self.commands.send(make(tx)).await.map_err(|_| Error::Closed)?;
        Ok(Answer(rx))
    }

    /// Subscribes to one filter and returns the granted QoS (or the refusal) from SUBACK.
    ///
    /// ```no_run
    /// # use cauldron_client::{Client, QoS};
    /// # async fn demo(client: Client) -> Result<(), cauldron_client::Error> {
    /// let granted = client.subscribe("owntracks/+/+", QoS::AtLeastOnce).await?;
    /// assert!(!granted.is_error(), "refused: {granted:?}");
    /// # Ok(()) }
    /// ```
    pub async fn subscribe(&self, filter: impl Into<ByteString>, qos: QoS) -> Result<ReasonCode, Error> {
        let options = SubOptions { qos, ..SubOptions::default() };
        let codes = self
            .subscribe_many(vec![Subscription { filter: filter.into(), options }], Properties::default())
            .await?;
        codes.into_iter().next().ok_or(Error::Closed)
    }

    /// Subscribes to several filters with full options and properties in one SUBSCRIBE.
    ///
    /// ```no_run
    /// # use cauldron_client::{Client, QoS, proto::{Properties, SubOptions, Subscription}};
    /// # async fn demo(client: Client) -> Result<(), cauldron_client::Error> {
    /// let own = SubOptions { qos: QoS::AtLeastOnce, no_local: true, ..SubOptions::default() };
    /// let filters = vec![
    ///     Subscription { filter: "temp/celsius".into(), options: own },
    ///     Subscription { filter: "$share/workers/jobs/#".into(), options: SubOptions::default() },
    /// ];
    /// let codes = client.subscribe_many(filters, Properties::default()).await?;
    /// # Ok(()) }
    /// ```
    pub async fn subscribe_many(
        &self,
        filters: Vec<Subscription>,
        properties: Properties,
    ) -> Result<Vec<ReasonCode>, Error> {
        self.request(|tx| Command::Subscribe(filters, properties, None, tx)).await
    }

    /// Unsubscribes and returns the UNSUBACK reason codes (empty below MQTT 5).
    ///
    /// ```no_run
    /// # async fn demo(client: cauldron_client::Client) -> Result<(), cauldron_client::Error> {
    /// client.unsubscribe("owntracks/+/+").await?;
    /// # Ok(()) }
    /// ```
    pub async fn unsubscribe(&self, filter: impl Into<ByteString>) -> Result<Vec<ReasonCode>, Error> {
        let filters = vec![filter.into()];
        self.request(|tx| Command::Unsubscribe(filters, None, tx)).await
    }

    /// Sends DISCONNECT (no will is published) and closes the connection.
    ///
    /// ```no_run
    /// # async fn demo(client: cauldron_client::Client) -> Result<(), cauldron_client::Error> {
    /// client.disconnect().await?;
    /// # Ok(()) }
    /// ```
    pub async fn disconnect(self) -> Result<(), Error> {
        self.disconnect_with(cauldron_proto::Disconnect::normal()).await
    }

    /// Sends the given DISCONNECT (e.g. MQTT 5 reason 0x04 to have the will published).
    ///
    /// ```no_run
    /// # async fn demo(client: cauldron_client::Client) -> Result<(), cauldron_client::Error> {
    /// use cauldron_client::proto::{Disconnect, ReasonCode};
    /// client.disconnect_with(Disconnect::with_reason(ReasonCode::DisconnectWithWill)).await?;
    /// # Ok(()) }
    /// ```
    pub async fn disconnect_with(self, disconnect: cauldron_proto::Disconnect) -> Result<(), Error> {
        self.request(|tx| Command::Disconnect(disconnect, tx)).await
    }

    /// Sends a packet as it is, without tracking it. For testing how a server reacts.
    ///
    /// ```no_run
    /// # async fn demo(client: cauldron_client::Client) -> Result<(), cauldron_client::Error> {
    /// // An extra PINGREQ; the server answers PINGRESP, which the client absorbs.
    /// client.send_raw(cauldron_client::proto::Packet::PingReq).await?;
    /// # Ok(()) }
    /// ```
    pub async fn send_raw(&self, packet: Packet) -> Result<(), Error> {
        self.commands.send(Command::Raw(packet)).await.map_err(|_| Error::Closed)
    }
}
