//! The OwnTracks recorder from the command line: its settings inside `cauldron serve`, and
//! `cauldron recorder`, which runs it alone as an MQTT client of any broker, or manages its
//! encryption keys.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use cauldron_broker::auth::acl::AclFile;
use cauldron_broker::auth::password::{PasswordFile, Passwords};
use cauldron_broker::config::toml::RecorderToml;
use cauldron_broker::{AllowAll, Authorizer, Broker, CancellationToken};
use cauldron_client::{Client, Options, QoS, Reconnect, Tls};
use cauldron_recorder::http::{Access, Api};
use cauldron_recorder::store::Store;
use cauldron_recorder::{Recorder, STORE_FILE};
use tokio::net::TcpListener;
use tracing::{info, warn};

/// Messages waiting for the store before the feed counts drops (in-process) or stops reading
/// the socket (standalone).
const FEED_CAPACITY: usize = 65_536;
/// `POST /api/0/import` takes files up to this size by default: years of a phone's history.
const DEFAULT_IMPORT_LIMIT_MB: usize = 64;
/// The Recorder's map tiles default: OpenStreetMap.
const DEFAULT_TILES: &str = "https://tile.openstreetmap.org/{z}/{x}/{y}.png";

/// The recorder's flags, shared by `serve` and `recorder`.
#[derive(clap::Args, Debug, Default)]
pub struct RecorderFlags {
    /// Do not run the OwnTracks recorder (no store, API or map) in `serve`.
    #[arg(long)]
    no_recorder: bool,
    /// A user who sees and may delete every device in the recorder's API and map; repeatable.
    #[arg(long = "recorder-admin", value_name = "USER")]
    admins: Vec<String>,
    /// Delete recorded history older than this many days (checked hourly). Default: keep all.
    #[arg(long, value_name = "DAYS")]
    recorder_retention_days: Option<u64>,
    /// Tile URL template for the map page.
    #[arg(long, value_name = "URL")]
    tile_url: Option<String>,
    /// Behind an authenticating reverse proxy: take the recorder API's user from this header
    /// instead of Basic auth. Only when the proxy always sets it.
    #[arg(long, value_name = "HEADER")]
    recorder_user_header: Option<String>,
    /// Serve this folder at `/` behind the recorder's login (a built owntracks/frontend with its
    /// `config/config.js`); the built-in map moves to `/map`.
    #[arg(long, value_name = "DIR")]
    recorder_docroot: Option<PathBuf>,
    /// An origin (`https://frontend.example`) whose pages may call the recorder's API and
    /// `/ws/last` with the user's login; repeatable.
    #[arg(long = "recorder-cors-origin", value_name = "URL")]
    cors_origins: Vec<String>,
    /// Keep the recorder's history in PostgreSQL (postgres://user[:password]@host[:port]/db)
    /// instead of the SQLite file in the data directory. Several cauldrons may share one.
    #[arg(long, value_name = "URL")]
    recorder_store: Option<String>,
    /// Where the recorder's HTTP side is reached from outside (https://owntracks.example):
    /// the links of tours start with it.
    #[arg(long, value_name = "URL")]
    recorder_public_url: Option<String>,
    /// Street addresses from an HTTP geocoder: nominatim[:URL], photon[:URL] or
    /// opencage:KEY[@URL]. Positions then leave the machine; answers are kept by geohash.
    #[arg(long, value_name = "SERVICE")]
    recorder_geocoder: Option<String>,
    /// Geocoder calls per second at most (Nominatim's policy is 1).
    #[arg(long, value_name = "N")]
    recorder_geocoder_rate: Option<f64>,
    /// Do not add addresses (the nearest place, found offline) and geohashes to positions;
    /// saves the place list's memory (about 30 MB).
    #[arg(long)]
    no_recorder_addresses: bool,
    /// The largest file POST /api/0/import takes, in MiB.
    #[arg(long, value_name = "MIB")]
    recorder_import_limit_mb: Option<usize>,
}

impl RecorderFlags {
    /// These flags over what a config file said.
    pub fn over(&self, mut file: RecorderToml) -> RecorderToml {
        if self.no_recorder {
            file.enabled = Some(false);
        }
        file.admins.extend(self.admins.iter().cloned());
        file.retention_days = self.recorder_retention_days.or(file.retention_days);
        file.tile_url = self.tile_url.clone().or(file.tile_url);
        file.user_header = self.recorder_user_header.clone().or(file.user_header);
        file.docroot = self.recorder_docroot.clone().or(file.docroot);
        file.cors_origins.extend(self.cors_origins.iter().cloned());
        file.store = self.recorder_store.clone().or(file.store);
        file.import_limit_mb = self.recorder_import_limit_mb.or(file.import_limit_mb);
        file.public_url = self.recorder_public_url.clone().or(file.public_url);
        file.geocoder = self.recorder_geocoder.clone().or(file.geocoder);
        file.geocoder_rate = self.recorder_geocoder_rate.or(file.geocoder_rate);
        if self.no_recorder_addresses {
            file.addresses = Some(false);
        }
        file
    }
}

/// The recorder's settings that can be wrong before anything starts.
pub fn check(settings: &RecorderToml) -> anyhow::Result<()> {
    for origin in &settings.cors_origins {
        cauldron_recorder::http::check_origin(origin)
            .map_err(|e| anyhow::anyhow!("recorder CORS origin {origin:?}: {e}"))?;
    }
    if let Some(dir) = &settings.docroot {
        anyhow::ensure!(dir.is_dir(), "recorder docroot {}: not a folder", dir.display());
    }
    geocoder(settings)?;
    Ok(())
}

/// Where a command finds the recorder's store: the SQLite file in the data directory, or a
/// PostgreSQL database.
#[derive(clap::Args, Debug)]
pub struct StoreArgs {
    /// The data directory holding the SQLite store.
    #[arg(long, default_value = "cauldron-data")]
    data_dir: PathBuf,
    /// The store in PostgreSQL instead: postgres://user[:password]@host[:port]/database.
    #[arg(long, value_name = "URL")]
    recorder_store: Option<String>,
}

impl StoreArgs {
    /// The store, which must exist already (a command that reads it should not make an
    /// empty one in a mistyped folder).
    pub fn open_existing(&self) -> anyhow::Result<Arc<dyn Store>> {
        if self.recorder_store.is_none() {
            let path = self.data_dir.join(STORE_FILE);
            anyhow::ensure!(path.exists(), "no recorder store at {}", path.display());
        }
        self.open()
    }

    /// The store, made if there is none yet.
    pub fn open(&self) -> anyhow::Result<Arc<dyn Store>> {
        Ok(open_store(self.recorder_store.as_deref(), &self.data_dir)?.0)
    }
}

/// The store and its name for logs.
fn open_store(url: Option<&str>, data_dir: &Path) -> anyhow::Result<(Arc<dyn Store>, String)> {
    Ok(cauldron_recorder::store::open(url, data_dir)?)
}

fn recorder_settings(settings: &RecorderToml) -> anyhow::Result<cauldron_recorder::Settings> {
    Ok(cauldron_recorder::Settings {
        addresses: settings.addresses.unwrap_or(true),
        public_url: settings.public_url.clone(),
        geocoder: geocoder(settings)?.map(Arc::new),
    })
}

fn geocoder(settings: &RecorderToml) -> anyhow::Result<Option<cauldron_recorder::geocoder::Geocoder>> {
    let Some(spec) = &settings.geocoder else { return Ok(None) };
    let geocoder = cauldron_recorder::geocoder::Geocoder::parse(spec, settings.geocoder_rate.unwrap_or(1.0))
        .map_err(|e| anyhow::anyhow!("recorder geocoder: {e}"))?;
    Ok(Some(geocoder))
}

/// The recorder's HTTP state, with retention running if asked for.
fn api(
    recorder: Arc<Recorder>,
    settings: &RecorderToml,
    passwords: Arc<Passwords>,
    authorizer: Arc<dyn Authorizer>,
) -> anyhow::Result<Api> {
    check(settings)?;
    if let Some(days) = settings.retention_days {
        tokio::spawn(cauldron_recorder::retain(Arc::clone(&recorder), days));
    }
    let access = Access {
        passwords,
        authorizer,
        admins: settings.admins.clone(),
        user_header: settings.user_header.as_ref().map(|h| h.to_ascii_lowercase()),
    };
    let tile_url = settings.tile_url.clone().unwrap_or_else(|| DEFAULT_TILES.to_string());
    Ok(Api {
        recorder,
        access: Arc::new(access),
        tile_url: tile_url.into(),
        cors_origins: settings.cors_origins.clone().into(),
        docroot: settings.docroot.clone(),
        forward: None,
        import_limit: settings.import_limit_mb.unwrap_or(DEFAULT_IMPORT_LIMIT_MB).saturating_mul(1 << 20),
    })
}

/// A message from the broker's tap: the publisher's acknowledgement waits for `finish`.
struct FromTap(cauldron_broker::Tapped);

impl cauldron_recorder::Incoming for FromTap {
    fn topic(&self) -> &str {
        &self.0.message.topic
    }
    fn payload(&self) -> &[u8] {
        &self.0.message.payload
    }
    fn finish(self, result: Result<(), String>) {
        self.0.done(result);
    }
}

/// The recorder inside `serve`: fed by a tap on `owntracks/#`, no socket in between; the API
/// checks users against the broker's own password file and ACL.
pub fn in_process(
    broker: &Arc<Broker>,
    data_dir: &Path,
    settings: &RecorderToml,
    passwords: &Arc<Passwords>,
    authorizer: &Arc<dyn Authorizer>,
) -> anyhow::Result<Api> {
    let (store, name) = open_store(settings.store.as_deref(), data_dir)?;
    let recorder = Recorder::with_settings(store, recorder_settings(settings)?);
    let messages = broker.tap("owntracks/#", FEED_CAPACITY);
    tokio::spawn(cauldron_recorder::feed(Arc::clone(&recorder), messages, FromTap));
    info!("OwnTracks recorder on (store {name})");
    let mut api = api(Arc::clone(&recorder), settings, Arc::clone(passwords), Arc::clone(authorizer))?;
    // HTTP-mode apps' positions reach MQTT-mode friends through the broker, and answers to
    // the devices' requests reach the devices.
    let forward: cauldron_recorder::http::Forward = {
        let broker = Arc::clone(broker);
        Arc::new(move |topic: &str, payload: &[u8], retain: bool| {
            // The recorder checks its names; this check makes sure nothing that is not a topic
            // name reaches the broker (and its store) from here, whatever the recorder does.
            if let Err(e) = cauldron_client::proto::topic::validate_name(topic) {
                tracing::warn!(topic, error = %e, "recorder message not published: not a topic name");
                return;
            }
            let payload = cauldron_client::proto::Bytes::copy_from_slice(payload);
            let message = cauldron_broker::Message::new(topic.into(), payload, QoS::AtLeastOnce, retain);
            drop(broker.publish(message).durable);
        })
    };
    let respond = Arc::clone(&forward);
    recorder.set_responder(Arc::new(move |topic: &str, payload: &[u8]| respond(topic, payload, false)));
    api.forward = Some(forward);
    Ok(api)
}

#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct RecorderArgs {
    #[command(subcommand)]
    command: Option<RecorderCommand>,
    /// The broker: mqtt[s]://[user[:password]@]host[:port], or ws[s]://...host[:port]/path.
    #[arg(long, value_name = "URL", default_value = "mqtt://127.0.0.1:1883")]
    broker: String,
    /// Topics to record; repeatable.
    #[arg(long = "topic", value_name = "FILTER", default_values_t = ["owntracks/#".to_string()])]
    topics: Vec<String>,
    /// QoS of the subscription.
    #[arg(long, value_name = "0|1|2", default_value_t = 2)]
    qos: u8,
    /// Client id of the persistent session. Default: cauldron-recorder-<hostname>.
    #[arg(long, value_name = "ID")]
    client_id: Option<String>,
    /// CA certificates for mqtts:// brokers (PEM).
    #[arg(long, value_name = "FILE")]
    cafile: Option<PathBuf>,
    /// Record retained messages too (they are old positions replayed on subscribe).
    #[arg(long)]
    use_retained: bool,
    /// Address of the recorder's HTTP API and map.
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:8083")]
    http: SocketAddr,
    /// Where the store lives.
    #[arg(long, value_name = "DIR", default_value = "cauldron-data")]
    data_dir: PathBuf,
    /// Users of the HTTP API (a Mosquitto password file); without one it answers loopback only.
    #[arg(long, value_name = "FILE")]
    password_file: Option<PathBuf>,
    /// Who sees whom in the HTTP API (a Mosquitto ACL file, read as the broker reads it).
    #[arg(long, value_name = "FILE")]
    acl_file: Option<PathBuf>,
    #[command(flatten)]
    flags: RecorderFlags,
}

#[derive(clap::Subcommand)]
enum RecorderCommand {
    /// Manage per-device encryption keys (the apps' encryptionKey).
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Set by hand whom a device sees in HTTP mode (by default: whom the broker's ACL lets its
    /// user read).
    #[command(subcommand)]
    Friends(FriendsCommand),
    /// Bring history from elsewhere into a device: GPX (tracks and waypoints), GeoJSON, the
    /// Recorder's .rec files, Google Takeout location history (Records.json, Semantic Location
    /// History, Timeline.json). Points already stored are not stored again.
    Import(crate::import::ImportArgs),
}

/// A device and the store that holds it.
#[derive(clap::Args)]
struct DeviceArgs {
    user: String,
    device: String,
    #[command(flatten)]
    store: StoreArgs,
}

impl DeviceArgs {
    /// The store, and the names (exactly as given: names are case-sensitive).
    fn open(&self) -> anyhow::Result<(Arc<dyn Store>, String, String)> {
        Ok((self.store.open()?, self.user.clone(), self.device.clone()))
    }
}

#[derive(clap::Subcommand)]
enum FriendsCommand {
    /// USER's DEVICE sees exactly these devices (`user/device`) in HTTP mode.
    Set {
        #[command(flatten)]
        device: DeviceArgs,
        #[arg(required = true, value_name = "USER/DEVICE")]
        friends: Vec<String>,
    },
    /// Back to friends from the ACL.
    Delete(DeviceArgs),
}

#[derive(clap::Subcommand)]
enum KeysCommand {
    /// Set the secret of USER's DEVICE (read from the terminal when not given).
    Set {
        #[command(flatten)]
        device: DeviceArgs,
        secret: Option<String>,
    },
    /// Remove the secret of USER's DEVICE.
    Delete(DeviceArgs),
}

pub async fn run(args: RecorderArgs) -> anyhow::Result<()> {
    match args.command {
        Some(RecorderCommand::Keys(keys)) => return run_keys(keys),
        Some(RecorderCommand::Friends(friends)) => return run_friends(friends),
        Some(RecorderCommand::Import(import)) => {
            return tokio::task::spawn_blocking(move || crate::import::run(import)).await?;
        }
        None => {}
    }
    use tokio::signal::unix::{signal, SignalKind};
    // Installed first: SIGINT or SIGTERM while starting still stops cleanly.
    let (mut interrupt, mut terminate) = (signal(SignalKind::interrupt())?, signal(SignalKind::terminate())?);
    let qos = crate::tools::qos(args.qos)?;
    let passwords = Arc::new(Passwords::new(match &args.password_file {
        Some(path) => Some(PasswordFile::load(path)?),
        None => None,
    }));
    let authorizer: Arc<dyn Authorizer> = match &args.acl_file {
        Some(path) => Arc::new(cauldron_broker::auth::acl::ReloadableAcl::new(AclFile::load(path)?)),
        None => Arc::new(AllowAll),
    };
    let settings = args.flags.over(RecorderToml::default());
    let (store, name) = open_store(settings.store.as_deref(), &args.data_dir)?;
    info!("recorder store {name}");
    let recorder = Recorder::with_settings(store, recorder_settings(&settings)?);
    let api = api(Arc::clone(&recorder), &settings, passwords, authorizer)?;
    let listener =
        TcpListener::bind(args.http).await.with_context(|| format!("binding HTTP {}", args.http))?;
    info!("recorder HTTP listening on {}", listener.local_addr()?);
    let app = cauldron_recorder::http::router(api).into_make_service_with_connect_info::<SocketAddr>();
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    let http = tokio::spawn(async move {
        axum::serve(listener, app).with_graceful_shutdown(stop.cancelled_owned()).await
    });

    let options = client_options(&args)?;
    info!(broker = %options.address, client_id = %options.client_id, "recorder connecting");
    let (client, mut messages) = Client::connect(options).await.context("connecting to the broker")?;
    // Answers to the devices' requests (tours) go back over the same connection.
    let (answering, runtime) = (client.clone(), tokio::runtime::Handle::current());
    recorder.set_responder(Arc::new(move |topic: &str, payload: &[u8]| {
        let (client, topic, payload) = (answering.clone(), topic.to_string(), payload.to_vec());
        runtime.spawn(async move {
            if let Err(e) = client.publish(topic.as_str(), payload, QoS::AtLeastOnce, false).await {
                warn!(topic, "answer to a device not sent: {e}");
            }
        });
    }));
    for topic in &args.topics {
        client.subscribe(topic.as_str(), qos).await.with_context(|| format!("subscribing to {topic}"))?;
    }
    let (feed_tx, feed_rx) = tokio::sync::mpsc::channel(FEED_CAPACITY);
    let feed = tokio::spawn(cauldron_recorder::feed(
        recorder,
        feed_rx,
        |m: (String, cauldron_client::proto::Bytes)| m,
    ));
    loop {
        tokio::select! {
            message = messages.recv() => {
                let Some(message) = message else { warn!("connection to the broker ended"); break };
                // Retained messages are old positions replayed on subscribe (the Recorder skips them too).
                if message.retain && !args.use_retained {
                    continue;
                }
                if feed_tx.send((message.topic.to_string(), message.payload)).await.is_err() {
                    break;
                }
            }
            _ = interrupt.recv() => break,
            _ = terminate.recv() => break,
        }
    }
    drop(feed_tx);
    let _ = feed.await;
    shutdown.cancel();
    let _ = http.await;
    let _ = client.disconnect().await;
    Ok(())
}

/// Connection options from `--broker`: a persistent session (clean session off, as the
/// Recorder uses) that reconnects by itself.
fn client_options(args: &RecorderArgs) -> anyhow::Result<Options> {
    let client_id = args.client_id.clone().unwrap_or_else(|| {
        let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
        format!("cauldron-recorder-{}", host.trim())
    });
    let mut options = Options::from_url(&args.broker, client_id).map_err(anyhow::Error::msg)?;
    let secure = args.broker.starts_with("mqtts://") || args.broker.starts_with("wss://");
    match &args.cafile {
        Some(cafile) => options = options.tls(Tls::new(cafile, None, true).map_err(anyhow::Error::msg)?),
        None if secure => anyhow::bail!("{} needs --cafile", args.broker),
        None => {}
    }
    Ok(options.clean_start(false).keep_alive(Duration::from_secs(60)).reconnect(Reconnect::default()))
}

fn run_friends(command: FriendsCommand) -> anyhow::Result<()> {
    match command {
        FriendsCommand::Set { device, friends } => {
            for friend in &friends {
                anyhow::ensure!(friend.contains(['/', ':', '-']), "{friend}: expected user/device");
            }
            let (store, user, device) = device.open()?;
            store.set_friends(&user, &device, Some(&friends))?;
        }
        FriendsCommand::Delete(device) => {
            let (store, user, device) = device.open()?;
            store.set_friends(&user, &device, None)?;
        }
    }
    Ok(())
}

fn run_keys(command: KeysCommand) -> anyhow::Result<()> {
    match command {
        KeysCommand::Set { device, secret } => {
            let secret = match secret {
                Some(secret) => secret,
                None => {
                    rpassword::prompt_password(format!("Secret for {}/{}: ", device.user, device.device))?
                }
            };
            anyhow::ensure!(!secret.is_empty(), "an empty secret encrypts nothing");
            let (store, user, device) = device.open()?;
            store.set_key(&user, &device, Some(&secret))?;
            println!("key set for {user}/{device}");
        }
        KeysCommand::Delete(device) => {
            let (store, user, device) = device.open()?;
            match store.set_key(&user, &device, None)? {
                true => println!("key deleted for {user}/{device}"),
                false => anyhow::bail!("no key for {user}/{device}"),
            }
        }
    }
    Ok(())
}
