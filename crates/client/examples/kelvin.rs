//! The same idea, running beside the Fahrenheit converter: `temp/celsius` to `temp/kelvin`.
//! Every subscriber gets every message, so both converters see each reading.
//!
//! ```sh
//! cargo run -p cauldron-client --example kelvin -- mqtt://127.0.0.1:1883
//! ```

use cauldron_client::{Client, Options, QoS, Reconnect};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::args().nth(1).unwrap_or_else(|| "mqtt://127.0.0.1:1883".into());
    let (client, mut readings) =
        Client::connect(Options::from_url(&url, "celsius-to-kelvin")?.reconnect(Reconnect::default()))
            .await?;
    client.subscribe("temp/celsius", QoS::AtLeastOnce).await?;
    while let Some(reading) = readings.recv().await {
        let Some(celsius) =
            std::str::from_utf8(&reading.payload).ok().and_then(|t| t.trim().parse::<f64>().ok())
        else {
            continue;
        };
        client
            .publish("temp/kelvin", format!("{:.2}", celsius + 273.15), QoS::AtLeastOnce, reading.retain)
            .await?;
    }
    Ok(())
}
