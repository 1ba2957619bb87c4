//! `cauldron bench pubsub`: publishers and one subscriber on one topic. Reports throughput and
//! end-to-end latency, and fails unless every message arrived.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use cauldron_client::Client;

use super::publish::Lane;
use super::{age_micros, histogram, progress, qos, Common, Counters, Summary};

#[derive(clap::Args)]
pub struct PubSubArgs {
    #[command(flatten)]
    common: Common,
    /// Publishing connections.
    #[arg(short = 'c', long, default_value_t = 8)]
    publishers: usize,
    /// Messages per publisher.
    #[arg(short = 'n', long, default_value_t = 10_000)]
    messages: usize,
    /// QoS of publishes and the subscription.
    #[arg(short = 'q', long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(0..=2))]
    qos: u8,
    /// Payload bytes (at least 8: the send time).
    #[arg(short = 's', long, default_value_t = 64)]
    size: usize,
    /// Unacknowledged publishes per publisher at once.
    #[arg(long, default_value_t = 16)]
    inflight: usize,
    /// Subscribe with a persistent session (clean session off), so a durable broker stores
    /// every message.
    #[arg(long)]
    persistent: bool,
    /// Topic to use.
    #[arg(short = 't', long, default_value = "bench/pubsub")]
    topic: String,
    /// Subscribe on this broker instead of --host (another node of a cluster: the messages
    /// cross nodes).
    #[arg(long, value_name = "HOST")]
    subscriber_host: Option<String>,
}

pub async fn run(args: PubSubArgs) -> anyhow::Result<()> {
    if args.size < 8 {
        bail!("--size must be at least 8 bytes (the send time)");
    }
    let qos = qos(args.qos);
    let total = (args.publishers * args.messages) as u64;
    let sub_id = format!("bench-sub-{}", std::process::id());
    let sub_options = |id: String| {
        let mut options = args.common.options(id);
        if let Some(host) = &args.subscriber_host {
            options.address = host.clone();
        }
        options
    };
    let (subscriber, mut messages) =
        Client::connect(sub_options(sub_id.clone()).clean_start(!args.persistent))
            .await
            .context("connecting the subscriber")?;
    subscriber.subscribe(args.topic.as_str(), qos).await.context("subscribing")?;
    let counters = Arc::new(Counters::default());
    counters.connected.fetch_add(1, Ordering::Relaxed);
    let ticker = progress(Arc::clone(&counters));

    let start = Instant::now();
    let collector = {
        let counters = Arc::clone(&counters);
        tokio::spawn(async move {
            let mut latency = histogram();
            while counters.received.load(Ordering::Relaxed) < total {
                let Ok(Some(message)) = tokio::time::timeout(Duration::from_secs(10), messages.recv()).await
                else {
                    break;
                };
                let _ = latency.record(age_micros(&message.payload).unwrap_or(1));
                counters.received.fetch_add(1, Ordering::Relaxed);
            }
            (latency, start.elapsed())
        })
    };

    let mut publishers = Vec::new();
    let lanes = args.inflight.max(1);
    for p in 0..args.publishers {
        let client = args.common.connect_publisher(p, &counters).await?;
        // `inflight` lanes share one connection, each publishing its part in turn.
        for lane in 0..lanes {
            let count = ((args.messages + lanes - 1 - lane) / lanes) as u64;
            if count == 0 {
                continue;
            }
            let lane = Lane {
                client: client.clone(),
                topic: args.topic.clone(),
                qos,
                size: args.size,
                count,
                period: None,
                until: None,
            };
            publishers.push(tokio::spawn(lane.run(Arc::clone(&counters))));
        }
    }
    for publisher in publishers {
        publisher.await?;
    }
    let (latency, elapsed) = collector.await?;
    if let Some(ticker) = ticker {
        ticker.abort();
    }
    let received = counters.received.load(Ordering::Relaxed);
    Summary { counters, elapsed, latency: Some(latency) }.print(args.common.json);
    if args.persistent {
        // Leave no stored session behind.
        drop(subscriber);
        let (cleanup, _) = Client::connect(sub_options(sub_id)).await?;
        cleanup.disconnect().await?;
    }
    if received < total {
        bail!("{} of {total} messages did not arrive", total - received);
    }
    Ok(())
}
