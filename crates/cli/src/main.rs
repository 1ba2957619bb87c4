//! `cauldron`: the MQTT broker and its tools in one binary.

// Doc comments here are command-line help (clap), where `[user[:password]@]` means optional,
// not a rustdoc link.
#![allow(rustdoc::broken_intra_doc_links, rustdoc::invalid_html_tags)]

mod bench;
mod config_check;
mod dump;
mod http;
mod import;
mod locations;
mod passwd;
mod recorder;
mod serve;
mod tools;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cauldron", version, about = "MQTT broker and OwnTracks hub")]
struct Cli {
    /// Log format: human-readable text or one JSON object per line.
    #[arg(long, global = true, value_enum, default_value = "text")]
    log_format: LogFormat,
    /// Log filter when RUST_LOG is not set: a level (error, warn, info, debug, trace) or
    /// per-module directives such as `info,cauldron_broker=debug`.
    #[arg(long, global = true, default_value = "info")]
    log_level: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the broker.
    Serve(Box<serve::ServeArgs>),
    /// Check a configuration file and print what would run.
    #[command(subcommand)]
    Config(config_check::ConfigCommand),
    /// Publish a message (mosquitto_pub's flags).
    Pub(tools::publish::PubArgs),
    /// Subscribe and print messages (mosquitto_sub's flags).
    Sub(tools::subscribe::SubArgs),
    /// Manage a Mosquitto password file (mosquitto_passwd's flags).
    Passwd(passwd::PasswdArgs),
    /// Run the OwnTracks recorder against any broker, or manage its keys.
    Recorder(Box<recorder::RecorderArgs>),
    /// Print a device's recorded locations (like the Recorder's ocat).
    Locations(locations::LocationsArgs),
    /// Generate load against a broker and measure it.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

use std::io::Write as _;

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // One line naming the problem (and, for files, where it is), not a backtrace; a
            // closed stderr is no reason to panic.
            let _ = writeln!(std::io::stderr(), "error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // Levels come from RUST_LOG (e.g. `RUST_LOG=cauldron_broker=debug`), else --log-level.
    let mut filter = match tracing_subscriber::EnvFilter::try_from_default_env() {
        Ok(filter) => filter,
        Err(_) => tracing_subscriber::EnvFilter::try_new(&cli.log_level)
            .map_err(|e| anyhow::anyhow!("--log-level {:?}: {e}", cli.log_level))?,
    };
    // `pub -d` / `sub -d`: every packet, as mosquitto_pub/sub's -d shows them.
    if matches!(&cli.command, Command::Pub(args) if args.debug())
        || matches!(&cli.command, Command::Sub(args) if args.debug())
    {
        filter = filter.add_directive("cauldron_client::packets=debug".parse()?);
    }
    // Log lines go to stderr from a thread of their own, through a bounded queue that drops
    // lines when full: a log reader that stalls or goes away (a full or broken pipe) never
    // blocks a connection, a commit or the shutdown. The guard flushes, bounded, at exit.
    let (stderr, _flush_at_exit) = tracing_appender::non_blocking(std::io::stderr());
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_writer(stderr);
    match cli.log_format {
        LogFormat::Json => logs.json().init(),
        LogFormat::Text => logs.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).init(),
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    match cli.command {
        Command::Serve(args) => runtime.block_on(serve::serve(*args)),
        Command::Bench(command) => runtime.block_on(bench::run(command)),
        Command::Passwd(args) => passwd::run(args),
        Command::Pub(args) => runtime.block_on(tools::publish::run(args)),
        Command::Sub(args) => runtime.block_on(tools::subscribe::run(args)),
        Command::Config(command) => config_check::run(command),
        Command::Recorder(args) => runtime.block_on(recorder::run(*args)),
        Command::Locations(args) => locations::run(args),
    }
}
