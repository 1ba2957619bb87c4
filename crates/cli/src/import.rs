//! `cauldron recorder import`: history from elsewhere (GPX, GeoJSON, the Recorder's `.rec`
//! files, Google Takeout) into one device, on either store. Every file is read before
//! anything is written; one that cannot be read stops the import with its name and position.

use std::io::IsTerminal;
use std::path::PathBuf;

use cauldron_recorder::import::{Format, Parsed, Rejected, Summary};
use cauldron_recorder::Recorder;

use crate::recorder::StoreArgs;

/// Rejected entries listed one by one before the rest are only counted.
const LISTED: usize = 20;

#[derive(clap::Args)]
pub struct ImportArgs {
    /// The user the history belongs to.
    #[arg(short, long)]
    user: String,
    /// The device it goes to.
    #[arg(short, long)]
    device: String,
    /// gpx, geojson, rec or takeout; by default told from each file's name and content.
    #[arg(short, long)]
    format: Option<String>,
    /// The files.
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
    #[command(flatten)]
    store: StoreArgs,
}

pub fn run(args: ImportArgs) -> anyhow::Result<()> {
    let forced = match &args.format {
        Some(name) => {
            Some(Format::parse(name).ok_or_else(|| anyhow::anyhow!("unrecognized format {name:?}"))?)
        }
        None => None,
    };
    let mut all = Parsed::default();
    let mut bad = Vec::new();
    for file in &args.files {
        let shown = file.display().to_string();
        let bytes = match std::fs::read(file) {
            Ok(bytes) => bytes,
            Err(e) => {
                bad.push(format!("{shown}: {e}"));
                continue;
            }
        };
        let Some(format) = forced.or_else(|| Format::detect(&shown, &bytes)) else {
            bad.push(format!("{shown}: not a format that can be imported (give --format)"));
            continue;
        };
        match format.read(&bytes) {
            Ok(parsed) => {
                all.entries.extend(parsed.entries);
                all.rejected.extend(
                    parsed
                        .rejected
                        .into_iter()
                        .map(|r| Rejected { position: format!("{shown}: {}", r.position), ..r }),
                );
            }
            Err(e) => bad.push(format!("{shown}: {e}")),
        }
    }
    if !bad.is_empty() {
        anyhow::bail!("nothing imported:\n  {}", bad.join("\n  "));
    }
    let store = args.store.open()?;
    let recorder = Recorder::new(store);
    let bar = progress(all.entries.len() as u64);
    let tick = bar.clone();
    let summary =
        recorder.import(&args.user, &args.device, all, move |done| tick.set_position(done as u64))?;
    bar.finish_and_clear();
    print!("{}", report(&summary, &args.user, &args.device));
    Ok(())
}

/// A progress bar on a terminal; nothing when the output goes elsewhere.
fn progress(total: u64) -> indicatif::ProgressBar {
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let style = indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} entries ({eta} left)")
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
    indicatif::ProgressBar::new(total).with_style(style)
}

fn report(summary: &Summary, user: &str, device: &str) -> String {
    let mut out = format!(
        "{user}/{device}: read {}, stored {}, duplicates {}, rejected {}\n",
        summary.read,
        summary.stored,
        summary.duplicates,
        summary.rejected.len()
    );
    for rejected in summary.rejected.iter().take(LISTED) {
        out.push_str(&format!("  rejected {}: {}\n", rejected.position, rejected.reason));
    }
    if summary.rejected.len() > LISTED {
        out.push_str(&format!("  ... and {} more rejected\n", summary.rejected.len() - LISTED));
    }
    out
}
