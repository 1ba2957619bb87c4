//! `cauldron sub`: subscribe and print what arrives, as `mosquitto_sub` does.

use std::io::Write;
use std::time::Duration;

use cauldron_client::proto::{SubOptions, Subscription};
use cauldron_client::{Client, QoS};

use super::{format, qos, ConnectArgs};

#[derive(clap::Args, Debug)]
#[command(disable_help_flag = true)]
pub struct SubArgs {
    #[command(flatten)]
    connect: ConnectArgs,
    /// Topic filter to subscribe to; repeat for several.
    #[arg(short = 't', long = "topic", required = true)]
    topics: Vec<String>,
    /// Filter out messages on topics matching this filter; repeat for several.
    #[arg(short = 'T', long = "filter-out")]
    filter_out: Vec<String>,
    /// QoS of the subscriptions.
    #[arg(short = 'q', long = "qos", default_value_t = 0)]
    qos: u8,
    /// Disable clean session (keep the session while disconnected).
    #[arg(short = 'c', long = "disable-clean-session")]
    persistent: bool,
    /// Print the topic before the payload.
    #[arg(short = 'v', long = "verbose")]
    verbose: bool,
    /// Output format (`%t` topic, `%p` payload, `%j` JSON, ...).
    #[arg(short = 'F')]
    format: Option<String>,
    /// Do not print a newline after each message.
    #[arg(short = 'N')]
    no_newline: bool,
    /// Exit after this many messages.
    #[arg(short = 'C', long = "count")]
    count: Option<u64>,
    /// Exit after this many seconds.
    #[arg(short = 'W', long = "timeout")]
    timeout: Option<u64>,
    /// Do not print messages that arrive with the retain flag (stale retained messages).
    #[arg(short = 'R')]
    no_retained: bool,
    /// Print only retained messages, exiting at the first live one.
    #[arg(long = "retained-only")]
    retained_only: bool,
    /// Clear the retained message of each topic a retained message arrives on.
    #[arg(long = "remove-retained")]
    remove_retained: bool,
    /// Subscribe, then exit at once (to set up a persistent session).
    #[arg(short = 'E')]
    exit_after_subscribe: bool,
    /// Print help.
    #[arg(long = "help", action = clap::ArgAction::Help)]
    help: Option<bool>,
}

impl SubArgs {
    /// `-d`: the caller turns on the client's packet trace.
    pub fn debug(&self) -> bool {
        self.connect.debug
    }
}

pub async fn run(args: SubArgs) -> anyhow::Result<()> {
    let qos = qos(args.qos)?;
    let (options, properties) = args.connect.options("cauldron_sub_", !args.persistent)?;
    let (client, mut messages) = Client::connect(options).await?;
    let filters = args
        .topics
        .iter()
        .map(|t| Subscription {
            filter: t.as_str().into(),
            options: SubOptions { qos, ..SubOptions::default() },
        })
        .collect();
    let codes = client.subscribe_many(filters, properties.subscribe).await?;
    if codes.iter().all(|c| c.is_error()) {
        anyhow::bail!("All subscription requests were denied.");
    }
    if args.exit_after_subscribe {
        return Ok(client.disconnect_with(super::disconnect(properties.disconnect)).await?);
    }
    let deadline = args.timeout.map(|s| tokio::time::Instant::now() + Duration::from_secs(s));
    let mut received = 0u64;
    let mut stdout = std::io::stdout().lock();
    loop {
        let next = match deadline {
            Some(at) => match tokio::time::timeout_at(at, messages.recv()).await {
                Ok(next) => next,
                Err(_) => {
                    eprintln!("Timed out");
                    std::process::exit(27);
                }
            },
            None => messages.recv().await,
        };
        let Some(message) = next else { anyhow::bail!("connection lost") };
        if args.filter_out.iter().any(|f| cauldron_client::proto::topic::matches(f, &message.topic)) {
            continue;
        }
        if args.retained_only && !message.retain {
            break;
        }
        if args.no_retained && message.retain {
            continue;
        }
        if args.remove_retained && message.retain {
            client.publish(message.topic.clone(), Vec::new(), QoS::AtLeastOnce, true).await?;
        }
        stdout.write_all(&format::render(&message, args.verbose, args.format.as_deref()))?;
        if !args.no_newline {
            stdout.write_all(b"\n")?;
        }
        stdout.flush()?;
        received += 1;
        if args.count.is_some_and(|c| received >= c) {
            break;
        }
    }
    drop(stdout);
    client.disconnect_with(super::disconnect(properties.disconnect)).await?;
    Ok(())
}
