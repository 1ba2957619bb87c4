//! How fast the recorder stores locations, without a broker in front: N OwnTracks locations
//! (default 1,000,000) over 10 devices in batches as the in-process feed takes them, then a
//! one-device, one-month query. DIR is a folder for SQLite, or a `postgres://` URL of an empty
//! database.
//!
//!     cargo run --release -p cauldron-recorder --example ingest_rate -- [N] [DIR|URL]

use std::time::Instant;

use cauldron_recorder::formats::Format;
use cauldron_recorder::store::{self, Range};
use cauldron_recorder::{timefmt, Recorder, Via};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(1_000_000);
    let place = args.next().unwrap_or_else(|| "target/ingest-rate".into());
    let store = match place.starts_with("postgres") {
        true => store::open(Some(&place), std::path::Path::new(""))?.0,
        false => {
            let dir = std::path::PathBuf::from(&place);
            let _ = std::fs::remove_dir_all(&dir);
            store::open(None, &dir)?.0
        }
    };
    let recorder = Recorder::new(store);
    let devices = 10;
    let start_tst = 1_704_067_200; // 2024-01-01, one point every 5 minutes per device
    let messages: Vec<(String, String)> = (0..n)
        .map(|i| {
            let (device, step) = (i % devices, (i / devices) as i64);
            let payload = format!(
                r#"{{"_type":"location","lat":{},"lon":{},"tst":{},"acc":10,"batt":80,"tid":"d{device}","vel":5}}"#,
                48.0 + step as f64 * 1e-5,
                2.0 + device as f64 * 0.01,
                start_tst + step * 300
            );
            (format!("owntracks/bench/device{device}"), payload)
        })
        .collect();
    let began = Instant::now();
    for batch in messages.chunks(2048) {
        recorder.ingest(batch.iter().map(|(t, p)| (t.as_str(), p.as_bytes())), Via::Mqtt)?;
    }
    let took = began.elapsed();
    println!(
        "ingest: {n} locations in {:.2} s: {:.0} locations/s",
        took.as_secs_f64(),
        n as f64 / took.as_secs_f64()
    );
    let (from, to) = (timefmt::parse("2024-03-01").unwrap(), timefmt::parse("2024-04-01").unwrap());
    let range = Range { from, to, limit: None };
    let mut times = Vec::new();
    let mut length = 0;
    for _ in 0..20 {
        let began = Instant::now();
        // What /api/0/locations?format=json answers, without the HTTP round trip.
        let body = Format::Json.locations(recorder.store().as_ref(), "bench", "device3", range, &[], "")?;
        times.push(began.elapsed().as_secs_f64() * 1000.0);
        length = body.len();
    }
    let points = recorder.store().locations("bench", "device3", range)?.len();
    times.sort_by(f64::total_cmp);
    println!(
        "query one device, one month: {points} points ({} KB of JSON), median {:.1} ms, worst {:.1} ms (of 20)",
        length / 1024,
        times[10],
        times[19]
    );
    Ok(())
}
