//! `cauldron bench conn`: N connections opened at a rate and held, for connect latency and
//! for how many connections a broker takes.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cauldron_client::Client;

use super::{histogram, progress, Common, Counters, Summary};

#[derive(clap::Args)]
pub struct ConnArgs {
    #[command(flatten)]
    common: Common,
    /// Connections to open.
    #[arg(short = 'c', long, default_value_t = 100)]
    count: usize,
    /// Connections per second (0: all at once).
    #[arg(short = 'r', long, default_value_t = 0)]
    rate: u32,
    /// Seconds to hold the connections open once all are attempted.
    #[arg(long, default_value_t = 0)]
    hold: u64,
}

pub async fn run(args: ConnArgs) -> anyhow::Result<()> {
    let counters = Arc::new(Counters::default());
    let ticker = progress(Arc::clone(&counters));
    let start = Instant::now();
    let mut tick = (args.rate > 0).then(|| tokio::time::interval(super::period(1, args.rate)));
    let mut attempts = Vec::with_capacity(args.count);
    for i in 0..args.count {
        if let Some(tick) = &mut tick {
            tick.tick().await;
        }
        let (options, counters) =
            (args.common.options(format!("bench-conn-{}-{i}", std::process::id())), Arc::clone(&counters));
        attempts.push(tokio::spawn(async move {
            let began = Instant::now();
            match Client::connect(options).await {
                Ok((client, _)) => {
                    counters.connected.fetch_add(1, Ordering::Relaxed);
                    Some((client, began.elapsed()))
                }
                Err(e) => {
                    tracing::debug!(error = %e, "connect failed");
                    counters.errors.fetch_add(1, Ordering::Relaxed);
                    None
                }
            }
        }));
    }
    let mut latency = histogram();
    let mut clients = Vec::new();
    for attempt in attempts {
        if let Some((client, took)) = attempt.await? {
            let _ = latency.record((took.as_micros() as u64).max(1));
            clients.push(client);
        }
    }
    let elapsed = start.elapsed();
    tokio::time::sleep(Duration::from_secs(args.hold)).await;
    for client in clients {
        let _ = client.disconnect().await;
    }
    if let Some(ticker) = ticker {
        ticker.abort();
    }
    let errors = counters.errors.load(Ordering::Relaxed);
    Summary { counters, elapsed, latency: Some(latency) }.print(args.common.json);
    if errors > 0 {
        anyhow::bail!("{errors} of {} connections failed", args.count);
    }
    Ok(())
}
