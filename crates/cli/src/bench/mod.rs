//! `cauldron bench`: load generation against any MQTT broker with this project's client, in
//! the spirit of emqtt-bench. `conn` opens connections at a rate, `pub` runs publishers, `sub`
//! runs subscribers, and `pubsub` does both and checks that every message arrives. Payloads
//! carry their send time (microseconds since the Unix epoch, first 8 bytes), so `sub` measures
//! end-to-end latency even when `pub` runs in another process. A line of rates goes to the
//! terminal each second; the summary goes to stdout, as JSON with `--json`.

mod conn;
mod publish;
mod pubsub;
mod subscribe;

use std::io::IsTerminal;

use anyhow::Context;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cauldron_client::{Options, Protocol, QoS};
use hdrhistogram::Histogram;

#[derive(clap::Subcommand)]
pub enum BenchCommand {
    /// Open connections at a rate and hold them: connect latency.
    Conn(conn::ConnArgs),
    /// Publishers at a rate (or flat out): publish throughput.
    Pub(publish::PubArgs),
    /// Subscribers: receive rate and, from the payload's send time, latency.
    Sub(subscribe::SubArgs),
    /// Publishers and one subscriber on one topic: throughput and latency, every message counted.
    Pubsub(pubsub::PubSubArgs),
}

pub async fn run(command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Conn(args) => conn::run(args).await,
        BenchCommand::Pub(args) => publish::run(args).await,
        BenchCommand::Sub(args) => subscribe::run(args).await,
        BenchCommand::Pubsub(args) => pubsub::run(args).await,
    }
}

/// Flags every mode shares.
#[derive(clap::Args, Clone)]
pub struct Common {
    /// Broker address.
    #[arg(short = 'H', long, default_value = "127.0.0.1:1883")]
    host: String,
    /// MQTT version: 3.1.1 or 5.
    #[arg(short = 'V', long = "protocol-version", default_value_t = 4, value_parser = clap::value_parser!(u8).range(4..=5))]
    version: u8,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

impl Common {
    fn options(&self, id: String) -> Options {
        let protocol = if self.version == 5 { Protocol::V5 } else { Protocol::V3_1_1 };
        Options::new(&self.host, id).protocol(protocol)
    }

    /// Connects publisher number `p` (the same id scheme for `pub` and `pubsub`) and counts it.
    async fn connect_publisher(
        &self,
        p: usize,
        counters: &Counters,
    ) -> anyhow::Result<cauldron_client::Client> {
        let id = format!("bench-pub-{}-{p}", std::process::id());
        let (client, _) =
            cauldron_client::Client::connect(self.options(id)).await.context("connecting a publisher")?;
        counters.connected.fetch_add(1, Ordering::Relaxed);
        Ok(client)
    }
}

fn qos(level: u8) -> QoS {
    [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce][usize::from(level)]
}

/// `%i` in a topic pattern becomes the client's index.
fn topic(pattern: &str, index: usize) -> String {
    pattern.replace("%i", &index.to_string())
}

/// The pause between events when `per_seconds` seconds hold `rate` of them; never zero, which
/// `tokio::time::interval` refuses, however high the rate asked for.
fn period(per_seconds: u64, rate: u32) -> Duration {
    (Duration::from_secs(per_seconds) / rate).max(Duration::from_nanos(1))
}

fn now_micros() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_micros() as u64
}

/// A payload of `size` bytes (at least 8) that starts with its send time.
fn stamped_payload(size: usize) -> Vec<u8> {
    let mut payload = vec![0u8; size.max(8)];
    payload[..8].copy_from_slice(&now_micros().to_be_bytes());
    payload
}

/// Microseconds since a payload was stamped, if it is long enough to carry the time.
fn age_micros(payload: &[u8]) -> Option<u64> {
    let sent = u64::from_be_bytes(payload.get(..8)?.try_into().ok()?);
    Some(now_micros().saturating_sub(sent).max(1))
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid bounds")
}

/// Counters the workers bump and the progress line and summary read.
#[derive(Default)]
struct Counters {
    connected: AtomicU64,
    sent: AtomicU64,
    received: AtomicU64,
    errors: AtomicU64,
}

/// Prints per-second rates to stderr while the run lasts, when stderr is a terminal.
fn progress(counters: Arc<Counters>) -> Option<tokio::task::JoinHandle<()>> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    Some(tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.tick().await;
        let mut last = [0u64; 3];
        loop {
            tick.tick().await;
            let now =
                [&counters.sent, &counters.received, &counters.errors].map(|c| c.load(Ordering::Relaxed));
            eprintln!(
                "connected {:>6}  sent {:>8}/s  received {:>8}/s  errors {:>4}",
                counters.connected.load(Ordering::Relaxed),
                now[0] - last[0],
                now[1] - last[1],
                now[2],
            );
            last = now;
        }
    }))
}

/// What a run did: printed as text or JSON.
struct Summary {
    counters: Arc<Counters>,
    elapsed: Duration,
    /// Connect latency (`conn`) or end-to-end message latency (`sub`, `pubsub`).
    latency: Option<Histogram<u64>>,
}

impl Summary {
    fn print(&self, json: bool) {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let c = &self.counters;
        let (connected, sent, received, errors) =
            (load(&c.connected), load(&c.sent), load(&c.received), load(&c.errors));
        let seconds = self.elapsed.as_secs_f64().max(1e-9);
        let ms = |q: f64| self.latency.as_ref().map(|h| h.value_at_quantile(q) as f64 / 1000.0);
        let latency =
            [("p50", ms(0.5)), ("p90", ms(0.9)), ("p99", ms(0.99)), ("p999", ms(0.999)), ("max", ms(1.0))];
        if json {
            let latency = match self.latency {
                Some(_) => {
                    let fields: Vec<String> = latency
                        .iter()
                        .map(|(name, v)| format!("\"{name}\":{:.3}", v.unwrap_or(0.0)))
                        .collect();
                    format!(",\"latency_ms\":{{{}}}", fields.join(","))
                }
                None => String::new(),
            };
            println!(
                "{{\"connected\":{connected},\"sent\":{sent},\"received\":{received},\"errors\":{errors},\"seconds\":{seconds:.3},\"sent_rate\":{:.0},\"received_rate\":{:.0}{latency}}}",
                sent as f64 / seconds,
                received as f64 / seconds
            );
            return;
        }
        println!("connected {connected} ({errors} errors) in {seconds:.2} s");
        if sent > 0 {
            println!("sent      {sent}: {:.0} msg/s", sent as f64 / seconds);
        }
        if received > 0 {
            println!("received  {received}: {:.0} msg/s", received as f64 / seconds);
        }
        if self.latency.is_some() {
            let parts: Vec<String> =
                latency.iter().map(|(name, v)| format!("{name} {:.2} ms", v.unwrap_or(0.0))).collect();
            println!("latency   {}", parts.join("  "));
        }
    }
}
