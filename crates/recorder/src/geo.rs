//! Where a position is, offline (no location leaves the machine): the nearest populated place
//! of GeoNames' `cities1000` (shipped inside the reverse_geocoder crate), as the Recorder's
//! `addr`, `locality` and `cc`, and the position's geohash (`ghash`).

use std::sync::OnceLock;

/// Places farther than this from a position do not name it (open sea, wilderness).
const NEAREST_PLACE_M: f64 = 30_000.0;
/// The Recorder's default geohash precision: cells of about 150 m.
const GHASH_PRECISION: usize = 7;

/// The place list and its search tree, built once (about 0.3 s) at the first position.
fn places() -> &'static reverse_geocoder::ReverseGeocoder {
    static PLACES: OnceLock<reverse_geocoder::ReverseGeocoder> = OnceLock::new();
    PLACES.get_or_init(reverse_geocoder::ReverseGeocoder::new)
}

/// What is known of where a position is.
#[derive(Debug, Clone, PartialEq)]
pub struct Address {
    pub ghash: String,
    /// `Paris, Ile-de-France, FR`: place, region, country code.
    pub addr: Option<String>,
    pub locality: Option<String>,
    pub cc: Option<String>,
}

/// The address of `lat`, `lon`, or none off the map.
pub fn address(lat: f64, lon: f64) -> Option<Address> {
    if !(-90.0..=90.0).contains(&lat) || !(-180.0..=180.0).contains(&lon) {
        return None;
    }
    let ghash = ghash(lat, lon)?;
    let nearest = places().search((lat, lon)).record;
    if distance_m((lat, lon), (nearest.lat, nearest.lon)) > NEAREST_PLACE_M {
        return Some(Address { ghash, addr: None, locality: None, cc: None });
    }
    let mut parts = vec![nearest.name.as_str()];
    if !nearest.admin1.is_empty() && nearest.admin1 != nearest.name {
        parts.push(&nearest.admin1);
    }
    parts.push(&nearest.cc);
    Some(Address {
        ghash,
        addr: Some(parts.join(", ")),
        locality: Some(nearest.name.clone()),
        cc: Some(nearest.cc.clone()),
    })
}

/// The geohash cell of a position (precision 7, about 150 m).
pub fn ghash(lat: f64, lon: f64) -> Option<String> {
    geohash::encode(geohash::Coord { x: lon, y: lat }, GHASH_PRECISION).ok()
}

/// Great-circle distance in metres between two `(lat, lon)` positions (haversine).
pub fn distance_m(a: (f64, f64), b: (f64, f64)) -> f64 {
    const EARTH_RADIUS_M: f64 = 6_371_008.8;
    let (lat1, lat2) = (a.0.to_radians(), b.0.to_radians());
    let (dlat, dlon) = ((b.0 - a.0).to_radians(), (b.1 - a.1).to_radians());
    let h = (dlat / 2.0).sin().powi(2) + lat1.cos() * lat2.cos() * (dlon / 2.0).sin().powi(2);
    2.0 * EARTH_RADIUS_M * h.sqrt().asin()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_near_and_far() {
        let paris = address(48.8566, 2.3522).unwrap();
        assert_eq!((paris.locality.as_deref(), paris.cc.as_deref()), (Some("Paris"), Some("FR")));
        assert_eq!(paris.addr.as_deref(), Some("Paris, Ile-de-France, FR"));
        assert_eq!(paris.ghash, "u09tvw0");
        let atlantic = address(40.0, -40.0).unwrap();
        assert_eq!((atlantic.addr, atlantic.cc), (None, None), "mid-ocean names no town");
        assert_eq!(address(91.0, 0.0), None);
        let km = distance_m((48.8566, 2.3522), (51.5074, -0.1278)) / 1000.0;
        assert!((343.0..345.0).contains(&km), "Paris-London {km} km");
    }
}
