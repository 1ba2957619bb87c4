//! `cauldron pub` and `cauldron sub`: the client tools with `mosquitto_pub`/`mosquitto_sub`'s
//! flags, so scripts keep working. Differences are listed in docs/CLI.md.

pub mod format;
pub mod properties;
pub mod publish;
pub mod subscribe;

use properties::PacketProperties;

use cauldron_client::{Options, Protocol, QoS};

/// Connection flags shared by both tools, with Mosquitto's letters.
#[derive(clap::Args, Debug, Clone)]
pub struct ConnectArgs {
    /// Broker host.
    #[arg(short = 'h', long = "host", default_value = "localhost")]
    pub host: String,
    /// Broker port [default: 1883, or 8883 with TLS].
    #[arg(short = 'p', long = "port")]
    pub port: Option<u16>,
    /// Broker URL instead of -h/-p/-u/-P: mqtt://[user[:password]@]host[:port]
    #[arg(short = 'L', long = "url")]
    pub url: Option<String>,
    /// Client id (default: a prefix and the process id).
    #[arg(short = 'i', long = "id")]
    pub id: Option<String>,
    /// Client id prefix (the process id is appended).
    #[arg(short = 'I', long = "id-prefix")]
    pub id_prefix: Option<String>,
    /// Keep alive in seconds.
    #[arg(short = 'k', long = "keepalive", default_value_t = 60)]
    pub keepalive: u16,
    #[arg(short = 'u', long = "username")]
    pub username: Option<String>,
    #[arg(short = 'P', long = "pw")]
    pub password: Option<String>,
    /// MQTT version: 31, 311 or 5 (also mqttv31, mqttv311, mqttv5).
    #[arg(short = 'V', long = "protocol-version", default_value = "311")]
    pub version: String,
    /// Will topic, payload, QoS and retain.
    #[arg(long = "will-topic")]
    pub will_topic: Option<String>,
    #[arg(long = "will-payload")]
    pub will_payload: Option<String>,
    #[arg(long = "will-qos", default_value_t = 0)]
    pub will_qos: u8,
    #[arg(long = "will-retain")]
    pub will_retain: bool,
    /// Print each packet sent and received to stderr.
    #[arg(short = 'd', long = "debug")]
    pub debug: bool,
    /// CA certificates (PEM) to trust; turns TLS on.
    #[arg(long = "cafile")]
    pub cafile: Option<std::path::PathBuf>,
    /// Client certificate (PEM) for TLS, with --key.
    #[arg(long = "cert", requires = "key")]
    pub cert: Option<std::path::PathBuf>,
    /// Client private key (PEM) for TLS, with --cert.
    #[arg(long = "key", requires = "cert")]
    pub key: Option<std::path::PathBuf>,
    /// Do not check that the server certificate names the host (the chain is still checked).
    #[arg(long = "insecure")]
    pub insecure: bool,
    /// An MQTT 5 property: -D COMMAND NAME VALUE (user-property: NAME KEY VALUE), where COMMAND is
    /// connect, publish, subscribe, unsubscribe, disconnect or will; repeatable.
    #[arg(short = 'D', long = "property", num_args = 3..=4, value_names = ["COMMAND", "NAME", "VALUE"])]
    pub properties: Vec<String>,
}

pub fn qos(level: u8) -> anyhow::Result<QoS> {
    Ok(match level {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        2 => QoS::ExactlyOnce,
        _ => anyhow::bail!("QoS must be 0, 1 or 2"),
    })
}

impl ConnectArgs {
    /// Client options from the flags, and the `-D` properties of the other packets;
    /// `default_prefix` names the tool in generated ids.
    pub fn options(
        &self,
        default_prefix: &str,
        clean_start: bool,
    ) -> anyhow::Result<(Options, PacketProperties)> {
        let id = match (&self.id, &self.id_prefix) {
            (Some(id), _) => id.clone(),
            (None, Some(prefix)) => format!("{prefix}{}", std::process::id()),
            (None, None) => format!("{default_prefix}{}", std::process::id()),
        };
        let mut options = match &self.url {
            Some(url) => Options::from_url(url, id).map_err(anyhow::Error::msg)?,
            None => {
                let port = self.port.unwrap_or(if self.cafile.is_some() { 8883 } else { 1883 });
                Options::new(format!("{}:{port}", self.host), id)
            }
        };
        if let Some(cafile) = &self.cafile {
            let identity = self.cert.as_deref().zip(self.key.as_deref());
            options = options.tls(
                cauldron_client::Tls::new(cafile, identity, !self.insecure).map_err(anyhow::Error::msg)?,
            );
        } else if self.cert.is_some() || self.insecure {
            anyhow::bail!("--cert, --key and --insecure need --cafile");
        }
        options.protocol = match self.version.as_str() {
            "31" | "mqttv31" => Protocol::V3_1,
            "311" | "mqttv311" => Protocol::V3_1_1,
            "5" | "mqttv5" => Protocol::V5,
            other => anyhow::bail!("unknown protocol version {other:?}: 31, 311 or 5"),
        };
        options.clean_start = clean_start;
        options.keep_alive = std::time::Duration::from_secs(u64::from(self.keepalive));
        if let Some(user) = &self.username {
            options.username = Some(user.as_str().into());
            options.password = self.password.clone().map(|p| p.into_bytes().into());
        }
        if let Some(topic) = &self.will_topic {
            let payload = self.will_payload.clone().unwrap_or_default();
            options =
                options.will(topic.as_str(), payload.into_bytes(), qos(self.will_qos)?, self.will_retain);
        }
        let mut properties = PacketProperties::parse(&self.properties)?;
        // Like mosquitto's tools: properties only exist in MQTT 5; below it they are not sent.
        if options.protocol == Protocol::V5 {
            options.properties = std::mem::take(&mut properties.connect);
            if let Some(will) = &mut options.will {
                will.properties = std::mem::take(&mut properties.will);
            }
        } else {
            properties = PacketProperties::default();
        }
        Ok((options, properties))
    }
}

/// A normal DISCONNECT carrying the `-D disconnect` properties.
pub fn disconnect(properties: cauldron_client::proto::Properties) -> cauldron_client::proto::Disconnect {
    let mut disconnect = cauldron_client::proto::Disconnect::normal();
    disconnect.properties = properties;
    disconnect
}
