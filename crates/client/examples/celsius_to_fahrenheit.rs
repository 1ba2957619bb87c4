//! The converter from OwnTracks' introduction to MQTT: read `temp/celsius`, publish the same
//! reading on `temp/fahrenheit`. Works against any MQTT broker.
//!
//! ```sh
//! cargo run -p cauldron-client --example celsius_to_fahrenheit -- mqtt://127.0.0.1:1883
//! mosquitto_pub -t temp/celsius -m 21.5      # and watch temp/fahrenheit: 70.7
//! ```

use cauldron_client::{Client, Options, QoS, Reconnect};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::args().nth(1).unwrap_or_else(|| "mqtt://127.0.0.1:1883".into());
    let (client, mut readings) =
        Client::connect(Options::from_url(&url, "celsius-to-fahrenheit")?.reconnect(Reconnect::default()))
            .await?;
    client.subscribe("temp/celsius", QoS::AtLeastOnce).await?;
    while let Some(reading) = readings.recv().await {
        // Payloads that are not a number are skipped, not fatal: sensors send odd things.
        let Some(celsius) =
            std::str::from_utf8(&reading.payload).ok().and_then(|t| t.trim().parse::<f64>().ok())
        else {
            continue;
        };
        let fahrenheit = celsius * 9.0 / 5.0 + 32.0;
        client
            .publish("temp/fahrenheit", format!("{fahrenheit:.1}"), QoS::AtLeastOnce, reading.retain)
            .await?;
    }
    Ok(())
}
