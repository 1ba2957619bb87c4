//! `cauldron bench pub`: N publishers, each at a rate or flat out, for a count or a duration.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cauldron_client::{Client, QoS};

use super::{progress, qos, stamped_payload, topic, Common, Counters, Summary};

#[derive(clap::Args)]
pub struct PubArgs {
    #[command(flatten)]
    common: Common,
    /// Publishing connections.
    #[arg(short = 'c', long, default_value_t = 8)]
    publishers: usize,
    /// Messages per publisher (0: until --duration ends).
    #[arg(short = 'n', long, default_value_t = 10_000)]
    messages: u64,
    /// Seconds to run (0: until every publisher sent -n messages).
    #[arg(short = 'd', long, default_value_t = 0)]
    duration: u64,
    /// Messages per second per publisher (0: as fast as acknowledgements allow).
    #[arg(short = 'r', long, default_value_t = 0)]
    rate: u32,
    #[arg(short = 'q', long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=2))]
    qos: u8,
    /// Payload bytes (at least 8: the send time).
    #[arg(short = 's', long, default_value_t = 64)]
    size: usize,
    /// Topic; `%i` becomes the publisher's index.
    #[arg(short = 't', long, default_value = "bench/%i")]
    topic: String,
    /// Unacknowledged publishes per publisher at once.
    #[arg(long, default_value_t = 16)]
    inflight: usize,
}

/// One lane of one publisher: publishes its share of messages (0: no limit), paced when a
/// period is set, until `until` if given. A publisher runs `inflight` lanes on one connection.
pub(super) struct Lane {
    pub client: Client,
    pub topic: String,
    pub qos: QoS,
    pub size: usize,
    pub count: u64,
    pub period: Option<Duration>,
    pub until: Option<Instant>,
}

impl Lane {
    pub async fn run(self, counters: Arc<Counters>) {
        let mut tick = self.period.map(tokio::time::interval);
        let mut sent = 0;
        while self.count == 0 || sent < self.count {
            if self.until.is_some_and(|until| Instant::now() >= until) {
                break;
            }
            if let Some(tick) = &mut tick {
                tick.tick().await;
            }
            match self.client.publish(self.topic.as_str(), stamped_payload(self.size), self.qos, false).await
            {
                Ok(_) => counters.sent.fetch_add(1, Ordering::Relaxed),
                Err(_) => counters.errors.fetch_add(1, Ordering::Relaxed),
            };
            sent += 1;
        }
    }
}

pub async fn run(args: PubArgs) -> anyhow::Result<()> {
    if args.messages == 0 && args.duration == 0 {
        anyhow::bail!("give -n MESSAGES or -d SECONDS (or both)");
    }
    let counters = Arc::new(Counters::default());
    let ticker = progress(Arc::clone(&counters));
    let lanes = args.inflight.max(1) as u64;
    let start = Instant::now();
    let until = (args.duration > 0).then(|| start + Duration::from_secs(args.duration));
    // Each lane sends its share of the publisher's rate.
    let period = (args.rate > 0).then(|| super::period(lanes, args.rate));
    let mut tasks = Vec::new();
    for p in 0..args.publishers {
        let client = args.common.connect_publisher(p, &counters).await?;
        for lane in 0..lanes {
            let count = match args.messages {
                0 => 0,
                n => (n + lanes - 1 - lane) / lanes,
            };
            if args.messages > 0 && count == 0 {
                continue;
            }
            let lane = Lane {
                client: client.clone(),
                topic: topic(&args.topic, p),
                qos: qos(args.qos),
                size: args.size,
                count,
                period,
                until,
            };
            tasks.push(tokio::spawn(lane.run(Arc::clone(&counters))));
        }
    }
    for task in tasks {
        task.await?;
    }
    let elapsed = start.elapsed();
    if let Some(ticker) = ticker {
        ticker.abort();
    }
    let errors = counters.errors.load(Ordering::Relaxed);
    Summary { counters, elapsed, latency: None }.print(args.common.json);
    if errors > 0 {
        anyhow::bail!("{errors} publishes failed");
    }
    Ok(())
}
