//! `cauldron bench sub`: N subscribers; receive rate and end-to-end latency from the send time
//! `bench pub` (or `bench pubsub`) puts in each payload.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use cauldron_client::Client;

use super::{age_micros, histogram, progress, qos, topic, Common, Counters, Summary};

#[derive(clap::Args)]
pub struct SubArgs {
    #[command(flatten)]
    common: Common,
    /// Subscribing connections.
    #[arg(short = 'c', long, default_value_t = 1)]
    subscribers: usize,
    /// Topic filter; `%i` becomes the subscriber's index.
    #[arg(short = 't', long, default_value = "bench/#")]
    topic: String,
    #[arg(short = 'q', long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=2))]
    qos: u8,
    /// Stop when each subscriber has this many messages (0: no limit).
    #[arg(short = 'n', long, default_value_t = 0)]
    messages: u64,
    /// Stop after this many seconds (0: no limit); also stops 10 s after the last message.
    #[arg(short = 'd', long, default_value_t = 0)]
    duration: u64,
}

pub async fn run(args: SubArgs) -> anyhow::Result<()> {
    if args.messages == 0 && args.duration == 0 {
        anyhow::bail!("give -n MESSAGES or -d SECONDS (or both)");
    }
    let counters = Arc::new(Counters::default());
    let mut receivers = Vec::new();
    for s in 0..args.subscribers {
        let options = args.common.options(format!("bench-sub-{}-{s}", std::process::id()));
        let (client, messages) = Client::connect(options).await.context("connecting a subscriber")?;
        client.subscribe(topic(&args.topic, s), qos(args.qos)).await.context("subscribing")?;
        counters.connected.fetch_add(1, Ordering::Relaxed);
        receivers.push((client, messages));
    }
    let ticker = progress(Arc::clone(&counters));
    let start = Instant::now();
    let until = (args.duration > 0).then(|| tokio::time::Instant::now() + Duration::from_secs(args.duration));
    let tasks: Vec<_> = receivers
        .into_iter()
        .map(|(client, mut messages)| {
            let counters = Arc::clone(&counters);
            tokio::spawn(async move {
                let mut latency = histogram();
                let mut received = 0;
                while args.messages == 0 || received < args.messages {
                    let idle = tokio::time::Instant::now() + Duration::from_secs(10);
                    let deadline = until.map_or(idle, |until| until.min(idle));
                    let Ok(Some(message)) = tokio::time::timeout_at(deadline, messages.recv()).await else {
                        break;
                    };
                    if let Some(age) = age_micros(&message.payload) {
                        let _ = latency.record(age);
                    }
                    counters.received.fetch_add(1, Ordering::Relaxed);
                    received += 1;
                }
                let _ = client.disconnect().await;
                latency
            })
        })
        .collect();
    let mut latency = histogram();
    for task in tasks {
        latency.add(task.await?).context("merging latency histograms")?;
    }
    let elapsed = start.elapsed();
    if let Some(ticker) = ticker {
        ticker.abort();
    }
    let received = counters.received.load(Ordering::Relaxed);
    Summary { counters, elapsed, latency: Some(latency) }.print(args.common.json);
    let expected = args.messages * args.subscribers as u64;
    if args.messages > 0 && args.duration == 0 && received < expected {
        anyhow::bail!("{} of {expected} messages did not arrive", expected - received);
    }
    Ok(())
}
