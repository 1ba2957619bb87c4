//! The time zone at a position, offline (no location leaves the machine): `tzname` as the
//! Recorder adds it, and the local time it gives (`isolocal`).

use std::sync::OnceLock;

/// The zone boundaries, read once (about 0.1 s) at the first position.
fn finder() -> &'static tzf_rs::DefaultFinder {
    static FINDER: OnceLock<tzf_rs::DefaultFinder> = OnceLock::new();
    FINDER.get_or_init(tzf_rs::DefaultFinder::new)
}

/// The IANA zone at `lat`, `lon` (`Europe/Paris`); none at sea or off the map.
pub fn name(lat: f64, lon: f64) -> Option<String> {
    if !(-90.0..=90.0).contains(&lat) || !(-180.0..=180.0).contains(&lon) {
        return None;
    }
    let zone = finder().get_tz_name(lon, lat);
    (!zone.is_empty()).then(|| zone.to_string())
}

/// `tst` as local time in `zone`, as the Recorder writes `isolocal`: `2024-02-02T07:38:18+0100`.
/// None for a zone the tz database does not know.
pub fn isolocal(tst: i64, zone: &str) -> Option<String> {
    let zone = jiff::tz::TimeZone::get(zone).ok()?;
    let local = jiff::Timestamp::from_second(tst).ok()?.to_zoned(zone);
    Some(local.strftime("%Y-%m-%dT%H:%M:%S%z").to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zones_and_local_times() {
        assert_eq!(name(48.8566, 2.3522).as_deref(), Some("Europe/Paris"));
        assert_eq!(name(52.52, 13.40).as_deref(), Some("Europe/Berlin"));
        assert_eq!(name(95.0, 0.0), None);
        // 06:38:18 UTC is 07:38:18 in a Paris winter; a July time is two hours ahead of UTC.
        assert_eq!(isolocal(1_706_855_898, "Europe/Paris").as_deref(), Some("2024-02-02T07:38:18+0100"));
        assert_eq!(isolocal(1_720_000_000, "Europe/Paris").as_deref(), Some("2024-07-03T11:46:40+0200"));
        assert_eq!(isolocal(1_706_855_898, "Nowhere/Special"), None);
    }
}
