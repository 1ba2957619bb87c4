//! `cauldron serve`: bind the listeners, run the broker until SIGINT or SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use cauldron_broker::{run, Broker, CancellationToken, Config};
use tokio::net::TcpListener;
use tracing::info;

#[derive(clap::Args)]
pub struct ServeArgs {
    /// Address to accept MQTT on; repeat for several. Default 127.0.0.1:1883.
    #[arg(long = "listen", value_name = "ADDR:PORT")]
    listen: Vec<SocketAddr>,
    /// Directory for persistent state.
    #[arg(long, value_name = "DIR", default_value = "cauldron-data")]
    data_dir: PathBuf,
    /// Messages queued per session beyond the inflight window (Mosquitto's max_queued_messages).
    #[arg(long, value_name = "N", default_value_t = Config::default().max_queued_messages)]
    max_queued_messages: usize,
    /// QoS 1/2 messages in flight to one client (Mosquitto's max_inflight_messages).
    #[arg(long, value_name = "N", default_value_t = Config::default().max_inflight_messages)]
    max_inflight_messages: usize,
}

pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let mut config = Config {
        data_dir: args.data_dir,
        max_queued_messages: args.max_queued_messages,
        max_inflight_messages: args.max_inflight_messages.max(1),
        ..Config::default()
    };
    if !args.listen.is_empty() {
        config.listeners = args.listen;
    }
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating data directory {}", config.data_dir.display()))?;
    let mut listeners = Vec::new();
    for addr in &config.listeners {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding {addr}"))?;
        listeners.push(listener);
    }
    info!("cauldron {} starting", env!("CARGO_PKG_VERSION"));
    let shutdown = CancellationToken::new();
    tokio::spawn(stop_on_signal(shutdown.clone()));
    run(Broker::new(config), listeners, shutdown).await?;
    info!("cauldron stopped");
    Ok(())
}

async fn stop_on_signal(shutdown: CancellationToken) {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
    }
    info!("shutdown requested");
    shutdown.cancel();
}
