//! `cauldron pub`: publish one message, a file, standard input or its lines, as `mosquitto_pub`.

use std::io::{BufRead, Read};

use futures_util::StreamExt;

use cauldron_client::proto::{Properties, Publish};
use cauldron_client::{Client, QoS};

use super::{qos, ConnectArgs};

#[derive(clap::Args, Debug)]
#[command(disable_help_flag = true)]
pub struct PubArgs {
    #[command(flatten)]
    connect: ConnectArgs,
    /// Topic to publish on.
    #[arg(short = 't', long = "topic", required = true)]
    topic: String,
    /// The message.
    #[arg(short = 'm', long = "message", group = "source")]
    message: Option<String>,
    /// Send the contents of a file as the message.
    #[arg(short = 'f', long = "file", group = "source")]
    file: Option<std::path::PathBuf>,
    /// Send each line of standard input as a message.
    #[arg(short = 'l', long = "stdin-line", group = "source")]
    lines: bool,
    /// Send all of standard input as one message.
    #[arg(short = 's', long = "stdin-file", group = "source")]
    stdin: bool,
    /// Send an empty message.
    #[arg(short = 'n', long = "null-message", group = "source")]
    null: bool,
    #[arg(short = 'q', long = "qos", default_value_t = 0)]
    qos: u8,
    /// Retain the message.
    #[arg(short = 'r', long = "retain")]
    retain: bool,
    /// Publish the message this many times.
    #[arg(long = "repeat", default_value_t = 1)]
    repeat: u32,
    /// Print help.
    #[arg(long = "help", action = clap::ArgAction::Help)]
    help: Option<bool>,
}

impl PubArgs {
    /// `-d`: the caller turns on the client's packet trace.
    pub fn debug(&self) -> bool {
        self.connect.debug
    }
}

pub async fn run(args: PubArgs) -> anyhow::Result<()> {
    let qos: QoS = qos(args.qos)?;
    let (options, properties) = args.connect.options("cauldron_pub_", true)?;
    let (client, _) = Client::connect(options).await?;
    let topic = args.topic.as_str();
    let single: Option<Vec<u8>> = if let Some(message) = args.message {
        Some(message.into_bytes())
    } else if let Some(file) = &args.file {
        Some(std::fs::read(file).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?)
    } else if args.stdin {
        let mut all = Vec::new();
        std::io::stdin().read_to_end(&mut all)?;
        Some(all)
    } else if args.null {
        Some(Vec::new())
    } else if args.lines {
        None
    } else {
        anyhow::bail!("nothing to publish: use -m, -f, -l, -s or -n");
    };
    let payloads: Box<dyn Iterator<Item = std::io::Result<Vec<u8>>>> = match single {
        Some(payload) => Box::new(std::iter::repeat_n(payload, args.repeat.max(1) as usize).map(Ok)),
        // -l: one message per line, sent as they come (the last one even without a newline).
        None => Box::new(std::io::stdin().lock().lines().map(|line| line.map(String::into_bytes))),
    };
    // Several QoS 1/2 messages in flight, like mosquitto_pub, still sent in input order.
    let mut sends = futures_util::stream::iter(payloads)
        .map(|payload| {
            let (client, properties) = (&client, &properties.publish);
            async move { send(client, topic, payload?, qos, args.retain, properties).await }
        })
        .buffered(IN_FLIGHT);
    while let Some(sent) = sends.next().await {
        sent?;
    }
    drop(sends);
    client.disconnect_with(super::disconnect(properties.disconnect)).await?;
    Ok(())
}

/// QoS 1/2 messages awaiting acknowledgement at once (mosquitto_pub's default).
const IN_FLIGHT: usize = 20;

/// One PUBLISH with the `-D publish` properties; waits for its acknowledgement at QoS 1/2.
async fn send(
    client: &Client,
    topic: &str,
    payload: Vec<u8>,
    qos: QoS,
    retain: bool,
    properties: &Properties,
) -> anyhow::Result<()> {
    let mut publish = Publish::new(topic, payload);
    (publish.qos, publish.retain, publish.properties) = (qos, retain, properties.clone());
    if let Some(code) = client.publish_packet(publish).await?.filter(|c| c.is_error()) {
        anyhow::bail!("publish refused: {code:?}");
    }
    Ok(())
}
