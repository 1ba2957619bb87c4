//! The optional HTTP geocoder (`--recorder-geocoder nominatim:URL`): street addresses stored
//! with the points, each geohash cell asked once and then kept in the store (across restarts,
//! `--dump ghash`), calls rate-limited with the offline address in their place.
//! Nominatim itself cannot run here (it needs a planet import); the service below answers its
//! `/reverse?format=jsonv2` calls in its documented shape, over a real socket, and counts them.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use common::owntracks::*;
use common::*;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Answers every `/reverse` call with an address naming the asked position; returns its URL
/// and the count of calls.
async fn reverse_geocoder() -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&calls);
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let counted = Arc::clone(&counted);
            tokio::spawn(async move {
                let mut request = vec![0u8; 4096];
                let n = socket.read(&mut request).await.unwrap_or(0);
                let request = String::from_utf8_lossy(&request[..n]).to_string();
                let query = request.split_whitespace().nth(1).unwrap_or_default().to_string();
                assert!(
                    request.contains("user-agent: cauldron/") || request.contains("User-Agent: cauldron/"),
                    "{request}"
                );
                counted.fetch_add(1, Ordering::SeqCst);
                let lat = query.split("lat=").nth(1).and_then(|r| r.split('&').next()).unwrap_or("?");
                let body = json!({"display_name": format!("1 Rue du Test {lat}, 75007 Paris, France"),
                    "address": {"road": "Rue du Test", "city": "Paris", "country_code": "fr"}})
                .to_string();
                let response = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(response.as_bytes()).await;
            });
        }
    });
    (url, calls)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn street_addresses_are_asked_once_per_cell_and_kept() {
    let (url, calls) = reverse_geocoder().await;
    let dir = data_dir("recorder-geocoder");
    let geocoder = format!("nominatim:{url}");
    let args = ["--recorder-geocoder", geocoder.as_str(), "--recorder-geocoder-rate", "1000"];
    let broker = Cauldron::start(&dir, &args).await;
    let p = port(&broker.addr).to_string();
    // Three points in one 150 m cell, one a few kilometres away.
    for (i, (lat, lon)) in
        [(48.85801, 2.29451), (48.85802, 2.29452), (48.85803, 2.29453), (48.88, 2.32)].iter().enumerate()
    {
        let point = json!({"_type": "location", "lat": lat, "lon": lon, "tst": 1706856000 + i as i64 * 60});
        publish(&p, "owntracks/jane/phone", &point.to_string()).await;
    }
    let path = "/api/0/locations?user=jane&device=phone&from=2024-02-01&to=2024-02-03";
    let history = wait_json(&broker.http, path, None, |v| v["count"] == 4).await;
    assert_eq!(history["data"][0]["addr"], "1 Rue du Test 48.85801, 75007 Paris, France");
    assert_eq!(
        (history["data"][0]["locality"].clone(), history["data"][0]["cc"].clone()),
        (json!("Paris"), json!("FR"))
    );
    assert_eq!(history["data"][2]["addr"], history["data"][0]["addr"], "the cell's answer, not a new call");
    assert_eq!(calls.load(Ordering::SeqCst), 2, "one call per cell");
    broker.terminate().await;

    // Kept in the store: after a restart the same cell asks nothing.
    let broker = Cauldron::start(&dir, &args).await;
    let point = json!({"_type": "location", "lat": 48.85804, "lon": 2.29454, "tst": 1706857000});
    publish(port(&broker.addr), "owntracks/jane/phone", &point.to_string()).await;
    let history = wait_json(&broker.http, path, None, |v| v["count"] == 5).await;
    assert_eq!(history["data"][4]["addr"], "1 Rue du Test 48.85801, 75007 Paris, France");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    broker.terminate().await;
    let dumped = cauldron_cli(&["locations", "--dump", "ghash", "--data-dir", dir.to_str().unwrap()]).await;
    assert_eq!(dumped.lines().count(), 2, "{dumped}");
    assert!(dumped.starts_with("u09tunq {\"addr\":\"1 Rue du Test 48.85801"), "{dumped}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_rate_the_offline_address_stays() {
    let (url, calls) = reverse_geocoder().await;
    let dir = data_dir("recorder-geocoder-rate");
    let geocoder = format!("nominatim:{url}");
    // One call a minute: of three cells published together, only the first is asked.
    let broker =
        Cauldron::start(&dir, &["--recorder-geocoder", &geocoder, "--recorder-geocoder-rate", "0.0166"])
            .await;
    let p = port(&broker.addr).to_string();
    for (i, lat) in [48.85, 48.95, 49.05].iter().enumerate() {
        let point = json!({"_type": "location", "lat": lat, "lon": 2.35, "tst": 1706856000 + i as i64 * 60});
        publish(&p, "owntracks/jane/phone", &point.to_string()).await;
    }
    let path = "/api/0/locations?user=jane&device=phone&from=2024-02-01&to=2024-02-03";
    let history = wait_json(&broker.http, path, None, |v| v["count"] == 3).await;
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert!(history["data"][0]["addr"].as_str().unwrap().starts_with("1 Rue du Test"));
    let offline = history["data"][2]["addr"].as_str().unwrap();
    assert!(!offline.starts_with("1 Rue du Test") && offline.ends_with(", FR"), "{offline}");
    // A bad geocoder setting stops the start, named.
    let bad = cauldron_cli_fails(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--http",
        "127.0.0.1:0",
        "--recorder-geocoder",
        "google",
    ])
    .await;
    assert!(bad.contains("recorder geocoder"), "{bad}");
}
