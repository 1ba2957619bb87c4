//! `cauldron`: the MQTT broker and its tools in one binary.

mod bench;
mod serve;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cauldron", version, about = "MQTT broker and OwnTracks hub")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the broker.
    Serve(serve::ServeArgs),
    /// Generate load against a broker and measure it.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Command::Serve(args) => runtime.block_on(serve::serve(args)),
        Command::Bench(command) => runtime.block_on(bench::run(command)),
    }
}
