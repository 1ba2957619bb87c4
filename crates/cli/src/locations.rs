//! `cauldron locations`: a device's recorded history from the store, in the Recorder's formats,
//! as its `ocat` prints it.

use std::io::Write;

use anyhow::Context;
use cauldron_recorder::formats::Format;
use cauldron_recorder::store::{Range, Store};
use cauldron_recorder::{timefmt, view};
use serde_json::{json, Value};

#[derive(clap::Args)]
pub struct LocationsArgs {
    /// The user; required for a history.
    #[arg(short, long)]
    user: Option<String>,
    /// The device; required for a history.
    #[arg(short, long)]
    device: Option<String>,
    /// List the users with data, or with --user that user's devices (ocat's --list).
    #[arg(long, conflicts_with = "last")]
    list: bool,
    /// Print a named table as `user/device value` lines: keys or friends (ocat's --dump).
    #[arg(long, value_name = "TABLE", conflicts_with_all = ["list", "last", "load"])]
    dump: Option<String>,
    /// Read `user/device value` lines from standard input into a named table (`DELETE` as the
    /// value removes the entry): keys or friends (ocat's --load).
    #[arg(long, value_name = "TABLE", conflicts_with_all = ["list", "last"])]
    load: Option<String>,
    /// Every device's last position, or only --user's (and --device's), as /api/0/last
    /// answers (ocat's --last).
    #[arg(long)]
    last: bool,
    /// Start (exclusive): YYYY-MM-DD[THH[:MM[:SS]]], YYYY-MM or epoch seconds. Default: 6 hours
    /// ago, or with --limit the start of this month.
    #[arg(short = 'F', long)]
    from: Option<String>,
    /// End (exclusive), same formats. Default: now.
    #[arg(short = 'T', long)]
    to: Option<String>,
    /// Only the newest N points.
    #[arg(short = 'N', long)]
    limit: Option<usize>,
    /// json, geojson, geojsonpoi, linestring, csv, xml, gpx, or raw (every record, all types,
    /// as the Recorder's `.rec` lines).
    #[arg(short, long, default_value = "json")]
    format: String,
    /// Only these fields (comma-separated), for json and csv.
    #[arg(long, value_delimiter = ',')]
    fields: Vec<String>,
    #[command(flatten)]
    store: crate::recorder::StoreArgs,
}

pub fn run(args: LocationsArgs) -> anyhow::Result<()> {
    let raw = args.format == "raw";
    let format = match raw {
        true => Format::Json,
        false => {
            Format::parse(&args.format).with_context(|| format!("unrecognized format {:?}", args.format))?
        }
    };
    let time =
        |flag: &str, text: &str| timefmt::parse(text).with_context(|| format!("{flag} {text:?}: not a time"));
    let now = timefmt::now();
    let from = match (&args.from, args.limit) {
        (Some(text), _) => time("--from", text)?,
        // ocat: a limit without a start looks back over the current month.
        (None, Some(_)) => timefmt::parse(&timefmt::month(now)).unwrap_or(0) - 1,
        (None, None) => now - 6 * 3600,
    };
    let to = match &args.to {
        Some(text) => time("--to", text)?,
        None => now + 1,
    };
    if let Some(table) = &args.load {
        let store = args.store.open()?;
        let applied = crate::dump::load(store.as_ref(), table, std::io::stdin().lock())?;
        eprintln!("{applied} entries loaded into {table}");
        return Ok(());
    }
    let store = args.store.open_existing()?;
    let store = store.as_ref();
    if let Some(table) = &args.dump {
        let mut stdout = std::io::stdout().lock();
        return crate::dump::dump(store, table, &mut stdout);
    }
    let mut stdout = std::io::stdout().lock();
    if args.list || args.last {
        let out = match args.list {
            true => list(store, args.user.as_deref())?,
            false => last(store, args.user.as_deref(), args.device.as_deref())?,
        };
        written(writeln!(stdout, "{out}"))?;
        return Ok(());
    }
    let (Some(user), Some(device)) = (args.user.clone(), args.device.clone()) else {
        anyhow::bail!("a history needs --user and --device (or --list, --last)");
    };
    if raw {
        // The Recorder's RECFORMAT: ISO time, the relative topic padded to 18, the payload.
        for record in store.records(&user, &device, from, to)? {
            let payload = String::from_utf8_lossy(&record.payload);
            let line = format!("{}\t{:<18}\t{}\n", timefmt::iso(record.tst), record.reltopic, payload);
            if !written(stdout.write_all(line.as_bytes()))? {
                return Ok(());
            }
        }
        return Ok(());
    }
    let points = store.locations(&user, &device, Range { from, to, limit: args.limit })?;
    let objects: Vec<_> = points.iter().map(|p| view::point(p, &user, &device)).collect();
    let out = match format {
        Format::Json => {
            let locations: Vec<Value> =
                objects.into_iter().map(|o| Value::Object(view::only(o, &args.fields))).collect();
            format!("{}\n", json!({"count": locations.len(), "locations": locations}))
        }
        other => other.render(objects, &args.fields, ""),
    };
    written(stdout.write_all(out.as_bytes()).and_then(|()| stdout.flush()))?;
    Ok(())
}

/// `{"results": [...]}`: the users, or one user's devices.
fn list(store: &dyn Store, user: Option<&str>) -> anyhow::Result<Value> {
    let results = match user {
        Some(user) => store.devices(user)?,
        None => store.users()?,
    };
    Ok(json!({ "results": results }))
}

/// The last positions, with each device's card, as `/api/0/last`.
fn last(store: &dyn Store, user: Option<&str>, device: Option<&str>) -> anyhow::Result<Value> {
    let mut out = Vec::new();
    for last in store.last()? {
        if user.is_some_and(|u| u != last.user) || device.is_some_and(|d| d != last.device) {
            continue;
        }
        let card = store.card(&last.user, &last.device)?;
        out.push(Value::Object(view::last(&last, card.as_deref())));
    }
    Ok(Value::Array(out))
}

/// Whether the reader still reads: one that went away (`| head -1`) ends the output quietly,
/// as for any filter; other write errors are errors.
fn written(result: std::io::Result<()>) -> anyhow::Result<bool> {
    match result {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(e).context("writing to standard output"),
    }
}
