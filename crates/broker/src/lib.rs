#![warn(unreachable_pub)]
//! The cauldron MQTT broker as a library. A whole server (auth files, TLS, the store, listeners,
//! bridges, reloads) from one configuration is a [`Server`]; the smallest embedding builds a
//! [`Broker`] from a [`Config`] and hands [`run`] bound listeners and a cancellation token, and it
//! serves until cancelled.
//!
//! ```no_run
//! # async fn example() -> std::io::Result<()> {
//! use cauldron_broker::{run, Broker, Config};
//! let broker = Broker::new(Config::default());
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:1883").await?;
//! let shutdown = tokio_util::sync::CancellationToken::new();
//! run(broker, vec![listener], shutdown).await
//! # }
//! ```

mod assembly;
pub mod auth;
pub mod authz;
pub mod bridge;
mod broker;
pub mod cluster;
pub mod config;
mod connection;
mod limits;
mod message;
pub mod metrics;
mod proxy;
mod retain;
mod router;
mod server;
mod session;
pub mod store;
mod sys;
pub mod tls;
mod ws;

pub use assembly::{Reload, Server, ServerError, STORE_FILE};
pub use authz::{AllowAll, Authorizer, ClientInfo};
pub use broker::{Broker, Stats, Tapped};
pub use config::{Config, Redirect};
pub use message::Message;
pub use server::{run, run_listeners, Listener, Socket};
pub use tokio_util::sync::CancellationToken;
