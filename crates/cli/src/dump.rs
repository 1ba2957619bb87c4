//! ocat's `--dump` and `--load` in `cauldron locations`: the recorder's named tables as
//! `key value` lines, one per line, to back up, edit with a script and load again. A key is
//! `user/device` (loading also takes the Recorder's `user-device`); a value `DELETE` removes it.
//!
//! - `keys`: the device's encryption secret.
//! - `friends`: the JSON array of the devices it sees in HTTP mode.
//! - `ghash`: the geocoder's answers, keyed by geohash instead (loading one only removes it:
//!   answers come from the geocoder).

use std::io::{BufRead, Write};

use cauldron_recorder::store::Store;

/// The tables that can be dumped and loaded.
pub const TABLES: &[&str] = &["keys", "friends", "ghash"];

pub fn dump(store: &dyn Store, table: &str, out: &mut impl Write) -> anyhow::Result<()> {
    match table {
        "keys" => {
            for (user, device, secret) in store.keys()? {
                writeln!(out, "{user}/{device} {secret}")?;
            }
        }
        "friends" => {
            for (user, device, friends) in store.all_friends()? {
                writeln!(out, "{user}/{device} {}", serde_json::to_string(&friends)?)?;
            }
        }
        "ghash" => {
            for (ghash, json) in store.geocache_all()? {
                writeln!(out, "{ghash} {json}")?;
            }
        }
        other => anyhow::bail!("no table {other:?} to dump: {}", tables()),
    }
    Ok(())
}

/// Loads `key value` lines; returns how many were applied. A bad line stops the load at that
/// line, naming it; the lines before it are applied (each line is one change, as in ocat).
pub fn load(store: &dyn Store, table: &str, input: impl BufRead) -> anyhow::Result<usize> {
    anyhow::ensure!(TABLES.contains(&table), "no table {table:?} to load: {}", tables());
    let mut applied = 0;
    for (i, line) in input.lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let at = || format!("line {}", i + 1);
        // Exactly one space between key and value, as ocat reads them.
        let Some((key, value)) = line.split_once(' ') else {
            anyhow::bail!("{}: expected `key value`", at());
        };
        if table == "ghash" {
            anyhow::ensure!(value == "DELETE", "{}: geocoder answers can only be removed (DELETE)", at());
            store.forget_geocache(key)?;
            applied += 1;
            continue;
        }
        let Some((user, device)) = key.split_once('/').or_else(|| key.split_once('-')) else {
            anyhow::bail!("{}: {key:?} is not user/device", at());
        };
        let remove = value == "DELETE";
        match table {
            "keys" => {
                store.set_key(user, device, (!remove).then_some(value))?;
            }
            _ => {
                let friends: Option<Vec<String>> = match remove {
                    true => None,
                    false => Some(
                        serde_json::from_str(value)
                            .map_err(|e| anyhow::anyhow!("{}: not a JSON array of strings: {e}", at()))?,
                    ),
                };
                store.set_friends(user, device, friends.as_deref())?;
            }
        }
        applied += 1;
    }
    Ok(applied)
}

fn tables() -> String {
    format!("one of {}", TABLES.join(", "))
}
