//! The OwnTracks recorder of cauldron: keeps what the OwnTracks apps publish (locations, events,
//! cards, waypoints, ...) in an embedded store, serves the OwnTracks Recorder HTTP API and a live
//! map, and answers HTTP-mode apps.
//!
//! Inside `cauldron serve` it is fed in-process by a broker tap ([`feed`]); as `cauldron
//! recorder` it is an MQTT client of any broker. Either way messages go through
//! [`Recorder::ingest`]. It depends on the broker's auth files (`cauldron-auth`), not on the
//! broker.
//!
//! ```no_run
//! # fn example() -> Result<(), cauldron_recorder::store::StoreError> {
//! use std::sync::Arc;
//! use cauldron_recorder::{store::SqliteStore, Recorder, Via};
//! let store = SqliteStore::open(std::path::Path::new("recorder.sqlite"))?;
//! let recorder = Recorder::new(Arc::new(store));
//! let payload = br#"{"_type":"location","lat":48.85,"lon":2.29,"tst":1706856298}"#;
//! recorder.ingest([("owntracks/jane/phone", &payload[..])], Via::Mqtt)?;
//! # Ok(()) }
//! ```

pub mod crypto;
pub mod formats;
pub mod geo;
pub mod geocoder;
pub mod http;
pub mod import;
mod ingest;
pub mod store;
pub mod timefmt;
pub mod timeline;
pub mod topic;
pub mod tours;
pub mod view;
mod zone;

use std::sync::Arc;
use std::time::Duration;

pub use ingest::{LiveEvent, Recorder, Responder, Settings, Via};

pub use store::STORE_FILE;

/// Messages written per transaction at most: big batches make bulk ingest fast, and a busy
/// feed still commits often.
const BATCH: usize = 2048;

/// A message as the feed receives it: from a broker tap or from an MQTT subscription.
pub trait Incoming: Send + 'static {
    fn topic(&self) -> &str;
    fn payload(&self) -> &[u8];
    /// Called once the batch holding it is stored (or failed to be).
    fn finish(self, _result: Result<(), String>)
    where
        Self: Sized,
    {
    }
}

impl Incoming for (String, bytes::Bytes) {
    fn topic(&self) -> &str {
        &self.0
    }
    fn payload(&self) -> &[u8] {
        &self.1
    }
}

/// Records what arrives on `messages` (each made an [`Incoming`] by `wrap`: a broker's tapped
/// message, an MQTT client's) until the channel closes, writing whatever is waiting in one
/// transaction, then telling each message how it went.
pub async fn feed<T: Send + 'static, M: Incoming>(
    recorder: Arc<Recorder>,
    mut messages: tokio::sync::mpsc::Receiver<T>,
    wrap: impl Fn(T) -> M + Send + 'static,
) {
    let mut batch = Vec::with_capacity(BATCH);
    while messages.recv_many(&mut batch, BATCH).await > 0 {
        let taken: Vec<M> = batch.drain(..).map(&wrap).collect();
        let recorder = Arc::clone(&recorder);
        let stored = tokio::task::spawn_blocking(move || {
            let result = recorder.ingest(taken.iter().map(|m| (m.topic(), m.payload())), Via::Mqtt);
            let outcome = result.as_ref().map(|_| ()).map_err(|e| e.to_string());
            for message in taken {
                message.finish(outcome.clone());
            }
            result
        })
        .await;
        match stored {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::error!("recorder: batch not stored (publishers not acknowledged): {e}"),
            Err(e) => tracing::error!("recorder: store task failed: {e}"),
        }
    }
}

/// Deletes history older than `days` now and then every hour, until the process ends.
pub async fn retain(recorder: Arc<Recorder>, days: u64) {
    let mut every = tokio::time::interval(Duration::from_secs(3600));
    loop {
        every.tick().await;
        let cutoff = timefmt::now() - (days as i64) * 86_400;
        let store = Arc::clone(recorder.store());
        match tokio::task::spawn_blocking(move || store.purge_before(cutoff)).await {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => tracing::info!(deleted = n, days, "recorder retention: old history deleted"),
            Ok(Err(e)) => tracing::error!("recorder retention: {e}"),
            Err(_) => {}
        }
    }
}
