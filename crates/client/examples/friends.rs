//! Prints friends' locations as the OwnTracks apps publish them on `owntracks/<user>/<device>`.
//!
//! ```sh
//! cargo run -p cauldron-client --example friends -- mqtt://jane:secret@127.0.0.1:1883
//! ```

use cauldron_client::{Client, Options, QoS, Reconnect};

/// The few fields of an OwnTracks location this example shows, read without a JSON library.
fn field<'a>(json: &'a str, name: &str) -> Option<&'a str> {
    let start = json.find(&format!("\"{name}\""))? + name.len() + 2;
    let value = json[start..].trim_start().strip_prefix(':')?.trim_start();
    let end = value.find([',', '}']).unwrap_or(value.len());
    Some(value[..end].trim().trim_matches('"'))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::args().nth(1).unwrap_or_else(|| "mqtt://127.0.0.1:1883".into());
    let (client, mut messages) =
        Client::connect(Options::from_url(&url, "friends-example")?.reconnect(Reconnect::default())).await?;
    client.subscribe("owntracks/+/+", QoS::AtLeastOnce).await?;
    while let Some(message) = messages.recv().await {
        let mut levels = message.topic.split('/').skip(1);
        let (user, device) = (levels.next().unwrap_or("?"), levels.next().unwrap_or("?"));
        let json = String::from_utf8_lossy(&message.payload);
        if field(&json, "_type") != Some("location") {
            continue;
        }
        let (lat, lon) = (field(&json, "lat").unwrap_or("?"), field(&json, "lon").unwrap_or("?"));
        let when = field(&json, "tst").unwrap_or("?");
        println!("{user}/{device}: {lat}, {lon} at {when}");
    }
    Ok(())
}
