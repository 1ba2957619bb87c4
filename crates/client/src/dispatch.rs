//! A handler per topic filter, as an alternative to reading [`Messages`] by hand.

use std::future::Future;
use std::pin::Pin;

use cauldron_proto::{topic, Publish};

use crate::Messages;

type Handler = Box<dyn FnMut(Publish) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

/// Calls the handlers whose filter matches each incoming message, in the order they were added.
///
/// ```no_run
/// # async fn demo() -> Result<(), cauldron_client::Error> {
/// use cauldron_client::{Client, Dispatcher, Options, QoS};
/// let (client, mut messages) = Client::connect(Options::new("localhost:1883", "converter")).await?;
/// client.subscribe("temp/+", QoS::AtLeastOnce).await?;
/// let out = client.clone();
/// Dispatcher::new()
///     .on("temp/celsius", move |message| {
///         let out = out.clone();
///         async move {
///             if let Some(c) = std::str::from_utf8(&message.payload).ok().and_then(|t| t.trim().parse::<f64>().ok()) {
///                 let _ = out.publish("temp/fahrenheit", format!("{}", c * 9.0 / 5.0 + 32.0), QoS::AtLeastOnce, false).await;
///             }
///         }
///     })
///     .on("temp/#", |message| async move { println!("{}", message.topic) })
///     .run(&mut messages)
///     .await;
/// # Ok(()) }
/// ```
#[derive(Default)]
pub struct Dispatcher {
    routes: Vec<(String, Handler)>,
}

impl Dispatcher {
    /// No handlers yet.
    ///
    /// ```
    /// let dispatcher = cauldron_client::Dispatcher::new();
    /// ```
    pub fn new() -> Dispatcher {
        Dispatcher::default()
    }

    /// Adds `handler` for messages whose topic matches `filter` (`+` and `#` wildcards as in a
    /// subscription). Subscribing is still up to the caller.
    ///
    /// ```
    /// let dispatcher = cauldron_client::Dispatcher::new().on("owntracks/+/+", |m| async move { drop(m) });
    /// ```
    pub fn on<F, Fut>(mut self, filter: impl Into<String>, mut handler: F) -> Dispatcher
    where
        F: FnMut(Publish) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.routes.push((filter.into(), Box::new(move |message| Box::pin(handler(message)))));
        self
    }

    /// Handles messages until the connection ends; each matching handler runs to completion
    /// before the next message, so a topic's messages are handled in order.
    ///
    /// ```no_run
    /// # async fn demo(mut messages: cauldron_client::Messages) {
    /// cauldron_client::Dispatcher::new().on("#", |m| async move { println!("{}", m.topic) }).run(&mut messages).await;
    /// # }
    /// ```
    pub async fn run(mut self, messages: &mut Messages) {
        while let Some(message) = messages.recv().await {
            for (filter, handler) in &mut self.routes {
                if topic::matches(filter, &message.topic) {
                    handler(message.clone()).await;
                }
            }
        }
    }
}
