//! `cauldron bench`: load generation against any MQTT broker with this project's client.
//! `pubsub` runs publishers and one subscriber and reports throughput and end-to-end latency
//! (each payload carries its send time).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use cauldron_client::{Client, Options, Protocol, QoS};
use hdrhistogram::Histogram;

#[derive(clap::Subcommand)]
pub enum BenchCommand {
    /// Publishers and one subscriber on one topic: throughput and latency.
    Pubsub(PubSubArgs),
}

#[derive(clap::Args)]
pub struct PubSubArgs {
    /// Broker address.
    #[arg(short = 'H', long, default_value = "127.0.0.1:1883")]
    host: String,
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
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

pub async fn run(command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Pubsub(args) => pubsub(args).await,
    }
}

fn qos(level: u8) -> QoS {
    [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce][usize::from(level)]
}

async fn pubsub(args: PubSubArgs) -> anyhow::Result<()> {
    if args.size < 8 {
        bail!("--size must be at least 8 bytes (the send time)");
    }
    let qos = qos(args.qos);
    let total = (args.publishers * args.messages) as u64;
    let options = |id: String| Options::new(&args.host, id).protocol(Protocol::V3_1_1);
    let sub_id = format!("bench-sub-{}", std::process::id());
    let (subscriber, mut messages) = Client::connect(options(sub_id).clean_start(!args.persistent))
        .await
        .context("connecting the subscriber")?;
    subscriber.subscribe(args.topic.as_str(), qos).await.context("subscribing")?;

    let epoch = Instant::now();
    let received = Arc::new(AtomicU64::new(0));
    let collector = {
        let received = Arc::clone(&received);
        tokio::spawn(async move {
            let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid bounds");
            while received.load(Ordering::Relaxed) < total {
                let Ok(Some(message)) = tokio::time::timeout(Duration::from_secs(10), messages.recv()).await
                else {
                    break;
                };
                let sent = u64::from_be_bytes(message.payload[..8].try_into().unwrap_or_default());
                let now = epoch.elapsed().as_micros() as u64;
                let _ = latency.record(now.saturating_sub(sent).max(1));
                received.fetch_add(1, Ordering::Relaxed);
            }
            (latency, epoch.elapsed())
        })
    };

    let errors = Arc::new(AtomicU64::new(0));
    let mut publishers = Vec::new();
    for p in 0..args.publishers {
        let (client, _) = Client::connect(options(format!("bench-pub-{}-{p}", std::process::id())))
            .await
            .context("connecting a publisher")?;
        // `inflight` tasks share one connection, each publishing its part in turn.
        for lane in 0..args.inflight.max(1) {
            let (client, errors, topic) = (client.clone(), Arc::clone(&errors), args.topic.clone());
            let count = (args.messages + args.inflight.max(1) - 1 - lane) / args.inflight.max(1);
            let size = args.size;
            publishers.push(tokio::spawn(async move {
                for _ in 0..count {
                    let mut payload = vec![0u8; size];
                    payload[..8].copy_from_slice(&(epoch.elapsed().as_micros() as u64).to_be_bytes());
                    if client.publish(topic.as_str(), payload, qos, false).await.is_err() {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }));
        }
    }
    for publisher in publishers {
        publisher.await?;
    }
    let published_in = epoch.elapsed();
    let (latency, received_in) = collector.await?;
    let received = received.load(Ordering::Relaxed);
    let errors = errors.load(Ordering::Relaxed);
    let rate = received as f64 / received_in.as_secs_f64();
    let ms = |q: f64| latency.value_at_quantile(q) as f64 / 1000.0;
    if args.json {
        println!(
            "{{\"sent\":{total},\"received\":{received},\"errors\":{errors},\"seconds\":{:.3},\"rate\":{rate:.0},\"latency_ms\":{{\"p50\":{:.3},\"p90\":{:.3},\"p99\":{:.3},\"p999\":{:.3},\"max\":{:.3}}}}}",
            received_in.as_secs_f64(), ms(0.5), ms(0.9), ms(0.99), ms(0.999), latency.max() as f64 / 1000.0
        );
    } else {
        println!("sent      {total} in {:.2} s ({errors} errors)", published_in.as_secs_f64());
        println!("received  {received} in {:.2} s: {rate:.0} msg/s", received_in.as_secs_f64());
        println!(
            "latency   p50 {:.2} ms  p90 {:.2} ms  p99 {:.2} ms  p99.9 {:.2} ms  max {:.2} ms",
            ms(0.5),
            ms(0.9),
            ms(0.99),
            ms(0.999),
            latency.max() as f64 / 1000.0
        );
    }
    if args.persistent {
        // Leave no stored session behind.
        drop(subscriber);
        let (cleanup, _) = Client::connect(options(format!("bench-sub-{}", std::process::id()))).await?;
        cleanup.disconnect().await?;
    }
    if received < total {
        bail!("{} of {total} messages did not arrive", total - received);
    }
    Ok(())
}
