//! An HTTP geocoder, only when the operator names one (`--recorder-geocoder`): street addresses
//! from Nominatim, Photon or OpenCage instead of the nearest town. As in the Recorder, answers
//! are kept by geohash (a cell of about 150 m is asked once, ever) and calls are rate-limited;
//! a call that fails, times out or would exceed the rate leaves the offline address in place,
//! so ingest never waits on the service for longer than one call's timeout.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;

/// One call at most this long: ingest waits for it.
const TIMEOUT: Duration = Duration::from_secs(3);

/// An address as a geocoder gives it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Found {
    pub addr: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub locality: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cc: Option<String>,
}

#[derive(Clone, PartialEq)]
enum Service {
    /// `…/reverse?format=jsonv2&lat=&lon=` (OpenStreetMap's own, or a self-hosted one).
    Nominatim(String),
    /// `…/reverse?lat=&lon=` (komoot's Photon, GeoJSON answers).
    Photon(String),
    /// `…/geocode/v1/json?q=LAT+LON&key=KEY`.
    OpenCage { url: String, key: String },
}

pub struct Geocoder {
    service: Service,
    agent: ureq::Agent,
    /// Calls at most this often.
    every: Duration,
    next_call: Mutex<Instant>,
}

/// Names the service, never an API key.
impl std::fmt::Debug for Geocoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let service = match &self.service {
            Service::Nominatim(url) => format!("nominatim {url}"),
            Service::Photon(url) => format!("photon {url}"),
            Service::OpenCage { url, .. } => format!("opencage {url}"),
        };
        f.debug_struct("Geocoder").field("service", &service).field("every", &self.every).finish()
    }
}

impl Geocoder {
    /// `nominatim[:URL]`, `photon[:URL]` or `opencage:KEY[@URL]`; `per_second` calls at most.
    pub fn parse(spec: &str, per_second: f64) -> Result<Geocoder, String> {
        let (kind, rest) = spec.split_once(':').map(|(k, r)| (k, Some(r))).unwrap_or((spec, None));
        let url = |default: &str| rest.unwrap_or(default).trim_end_matches('/').to_string();
        let service = match kind {
            "nominatim" => Service::Nominatim(url("https://nominatim.openstreetmap.org")),
            "photon" => Service::Photon(url("https://photon.komoot.io")),
            "opencage" => {
                let rest =
                    rest.filter(|r| !r.is_empty()).ok_or("opencage needs its API key: opencage:KEY")?;
                let (key, url) = rest.split_once('@').unwrap_or((rest, "https://api.opencagedata.com"));
                Service::OpenCage { url: url.trim_end_matches('/').to_string(), key: key.to_string() }
            }
            other => {
                return Err(format!("{other:?}: expected nominatim[:URL], photon[:URL] or opencage:KEY"))
            }
        };
        if !(per_second > 0.0 && per_second.is_finite()) {
            return Err(format!("geocoder rate {per_second}: must be above 0"));
        }
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(TIMEOUT))
            // Nominatim's usage policy asks every application to name itself.
            .user_agent(concat!("cauldron/", env!("CARGO_PKG_VERSION"), " (OwnTracks recorder)"))
            .build()
            .new_agent();
        let every = Duration::from_secs_f64(1.0 / per_second);
        Ok(Geocoder { service, agent, every, next_call: Mutex::new(Instant::now()) })
    }

    /// The address at `lat`, `lon`, or none when the service fails or the rate is used up.
    pub fn lookup(&self, lat: f64, lon: f64) -> Option<Found> {
        {
            let mut next = self.next_call.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            if now < *next {
                return None;
            }
            *next = now + self.every;
        }
        match self.call(lat, lon) {
            Ok(found) => found,
            Err(e) => {
                tracing::warn!("geocoder: {e}");
                None
            }
        }
    }

    fn call(&self, lat: f64, lon: f64) -> Result<Option<Found>, ureq::Error> {
        let (lat, lon) = (lat.to_string(), lon.to_string());
        let request = match &self.service {
            Service::Nominatim(url) => self
                .agent
                .get(format!("{url}/reverse"))
                .query("format", "jsonv2")
                .query("lat", &lat)
                .query("lon", &lon)
                .query("addressdetails", "1"),
            Service::Photon(url) => {
                self.agent.get(format!("{url}/reverse")).query("lat", &lat).query("lon", &lon)
            }
            Service::OpenCage { url, key } => self
                .agent
                .get(format!("{url}/geocode/v1/json"))
                .query("q", format!("{lat}+{lon}"))
                .query("key", key)
                .query("no_annotations", "1"),
        };
        let body: Value =
            serde_json::from_str(&request.call()?.body_mut().read_to_string()?).unwrap_or_default();
        Ok(match &self.service {
            Service::Nominatim(_) => nominatim(&body),
            Service::Photon(_) => photon(&body),
            Service::OpenCage { .. } => opencage(&body),
        })
    }
}

fn text(value: &Value, keys: &[&str]) -> Option<String> {
    keys.iter().find_map(|k| value.get(*k).and_then(Value::as_str)).map(str::to_string)
}

const TOWN: &[&str] = &["city", "town", "village", "hamlet", "municipality"];

fn upper(cc: Option<String>) -> Option<String> {
    cc.map(|c| c.to_ascii_uppercase())
}

fn nominatim(body: &Value) -> Option<Found> {
    let address = body.get("address").unwrap_or(&Value::Null);
    Some(Found {
        addr: text(body, &["display_name"])?,
        locality: text(address, TOWN),
        cc: upper(text(address, &["country_code"])),
    })
}

fn photon(body: &Value) -> Option<Found> {
    let p = body.pointer("/features/0/properties")?;
    let street = match (text(p, &["street"]), text(p, &["housenumber"])) {
        (Some(street), Some(number)) => Some(format!("{street} {number}")),
        (street, _) => street,
    };
    let parts: Vec<String> =
        [text(p, &["name"]), street, text(p, &["postcode"]), text(p, &["city"]), text(p, &["country"])]
            .into_iter()
            .flatten()
            .collect();
    (!parts.is_empty()).then(|| Found {
        addr: parts.join(", "),
        locality: text(p, &["city"]),
        cc: upper(text(p, &["countrycode"])),
    })
}

fn opencage(body: &Value) -> Option<Found> {
    let first = body.pointer("/results/0")?;
    let components = first.get("components").unwrap_or(&Value::Null);
    Some(Found {
        addr: text(first, &["formatted"])?,
        locality: text(components, TOWN),
        cc: upper(text(components, &["country_code"])),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn answers_of_each_service() {
        let n = json!({"display_name": "5 Avenue Anatole France, 75007 Paris, France",
            "address": {"house_number": "5", "city": "Paris", "country_code": "fr"}});
        assert_eq!(
            nominatim(&n),
            Some(Found {
                addr: "5 Avenue Anatole France, 75007 Paris, France".into(),
                locality: Some("Paris".into()),
                cc: Some("FR".into())
            })
        );
        let p = json!({"features": [{"properties": {"name": "Tour Eiffel", "street": "Avenue Anatole France",
            "housenumber": "5", "postcode": "75007", "city": "Paris", "country": "France", "countrycode": "FR"}}]});
        assert_eq!(photon(&p).unwrap().addr, "Tour Eiffel, Avenue Anatole France 5, 75007, Paris, France");
        let o = json!({"results": [{"formatted": "5 Avenue Anatole France, Paris", "components": {"town": "Paris", "country_code": "fr"}}]});
        assert_eq!(opencage(&o).unwrap().cc.as_deref(), Some("FR"));
        assert_eq!(nominatim(&json!({"error": "Unable to geocode"})), None);
    }

    #[test]
    fn specs_and_the_rate() {
        assert!(Geocoder::parse("nominatim", 1.0).is_ok());
        assert!(Geocoder::parse("photon:http://127.0.0.1:2322", 5.0).is_ok());
        assert!(Geocoder::parse("opencage", 1.0).unwrap_err().contains("API key"));
        assert!(Geocoder::parse("google", 1.0).is_err());
        assert!(Geocoder::parse("nominatim", 0.0).is_err());
        // Nothing listens on port 1: the call fails fast and the next is rate-limited, not made.
        let geocoder = Geocoder::parse("nominatim:http://127.0.0.1:1", 0.5).unwrap();
        assert_eq!(geocoder.lookup(48.85, 2.29), None);
        let began = Instant::now();
        assert_eq!(geocoder.lookup(48.85, 2.29), None);
        assert!(began.elapsed() < Duration::from_millis(50), "the second call waits for nothing");
    }
}
