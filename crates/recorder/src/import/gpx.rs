//! GPX 1.0 and 1.1: track and route points become locations, waypoints (`wpt`) waypoints.
//! A point's `time`, `ele`, and GPX 1.0's `speed` (m/s) and `course` are kept.

use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;

use super::{round, Entry, FileError, Fix, Parsed};
use crate::timefmt;

/// The point being read: its line, attributes, and the child elements seen so far.
struct Point {
    line: usize,
    kind: Kind,
    lat: Option<f64>,
    lon: Option<f64>,
    time: Option<String>,
    ele: Option<f64>,
    speed: Option<f64>,
    course: Option<f64>,
    name: String,
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Track,
    Waypoint,
}

pub fn read(bytes: &[u8]) -> Result<Parsed, FileError> {
    let text = std::str::from_utf8(bytes)
        .map_err(|e| FileError::new(format!("line {}", line_of(bytes, e.valid_up_to())), "not UTF-8 text"))?;
    let mut reader = Reader::from_str(text);
    let mut parsed = Parsed::default();
    let mut point: Option<Point> = None;
    // The child element of a point whose text is being read.
    let mut field: Option<Vec<u8>> = None;
    let mut seen_gpx = false;
    loop {
        let at = reader.buffer_position() as usize;
        let event = reader.read_event().map_err(|e| {
            FileError::new(format!("line {}", line_of(bytes, reader.error_position() as usize)), e)
        })?;
        let empty = matches!(event, Event::Empty(_));
        match event {
            Event::Start(e) | Event::Empty(e) if point.is_none() => {
                let kind = match e.local_name().as_ref() {
                    b"gpx" => {
                        seen_gpx = true;
                        continue;
                    }
                    b"trkpt" | b"rtept" => Kind::Track,
                    b"wpt" => Kind::Waypoint,
                    _ => continue,
                };
                let started = start(&e, kind, line_of(bytes, at))?;
                match empty {
                    true => finish(&mut parsed, started),
                    false => point = Some(started),
                }
            }
            Event::Start(e) => field = Some(e.local_name().as_ref().to_vec()),
            Event::Text(t) => {
                if let (Some(p), Some(f)) = (point.as_mut(), field.as_deref()) {
                    let value = t.decode().map_err(|e| FileError::new(format!("line {}", p.line), e))?;
                    let value = quick_xml::escape::unescape(&value)
                        .map(|v| v.into_owned())
                        .unwrap_or(value.into_owned());
                    text_of(p, f, &value);
                }
            }
            Event::GeneralRef(r) => {
                if let (Some(p), Some(f)) = (point.as_mut(), field.as_deref()) {
                    let resolved = match r.resolve_char_ref() {
                        Ok(Some(c)) => c.to_string(),
                        _ => {
                            let name = r.decode().unwrap_or_default();
                            quick_xml::escape::resolve_xml_entity(&name).unwrap_or_default().to_string()
                        }
                    };
                    text_of(p, f, &resolved);
                }
            }
            Event::End(e) => match e.local_name().as_ref() {
                b"trkpt" | b"rtept" | b"wpt" => {
                    if let Some(p) = point.take() {
                        finish(&mut parsed, p);
                    }
                    field = None;
                }
                _ => field = None,
            },
            Event::Eof => break,
            _ => {}
        }
    }
    if !seen_gpx {
        return Err(FileError::new("line 1", "not a GPX file (no <gpx> element)"));
    }
    Ok(parsed)
}

fn start(e: &BytesStart, kind: Kind, line: usize) -> Result<Point, FileError> {
    let number = |key: &str| -> Result<Option<f64>, FileError> {
        let Some(attribute) =
            e.try_get_attribute(key).map_err(|err| FileError::new(format!("line {line}"), err))?
        else {
            return Ok(None);
        };
        let value = attribute
            .normalized_value(quick_xml::XmlVersion::Implicit1_0)
            .map_err(|err| FileError::new(format!("line {line}"), err))?;
        Ok(value.trim().parse::<f64>().ok())
    };
    Ok(Point {
        line,
        kind,
        lat: number("lat")?,
        lon: number("lon")?,
        time: None,
        ele: None,
        speed: None,
        course: None,
        name: String::new(),
    })
}

fn text_of(point: &mut Point, field: &[u8], value: &str) {
    let number = || value.trim().parse::<f64>().ok();
    match field {
        b"time" => point.time.get_or_insert_with(String::new).push_str(value),
        b"ele" => point.ele = number(),
        b"speed" => point.speed = number(),
        b"course" => point.course = number(),
        b"name" => point.name.push_str(value),
        _ => {}
    }
}

fn finish(parsed: &mut Parsed, p: Point) {
    let position = || format!("line {}", p.line);
    let (Some(lat), Some(lon)) = (p.lat, p.lon) else {
        return parsed.reject(position(), "no numeric lat and lon");
    };
    let Some(time) = p.time.as_deref() else {
        return parsed.reject(position(), "no <time>");
    };
    let Some(tst) = timefmt::parse_iso(time) else {
        return parsed.reject(position(), format!("<time> {time:?} is not an ISO 8601 time"));
    };
    match p.kind {
        Kind::Track => {
            let mut fix = Fix::at(tst, lat, lon);
            fix.alt = round(p.ele);
            fix.vel = round(p.speed.map(|mps| mps * 3.6));
            fix.cog = round(p.course);
            parsed.fix(position, fix);
        }
        Kind::Waypoint => match super::check(tst, lat, lon) {
            Ok(()) => parsed.entries.push(Entry::Waypoint { tst, lat, lon, desc: p.name.trim().to_string() }),
            Err(reason) => parsed.reject(position(), reason),
        },
    }
}

/// The line (from 1) of byte `offset`.
fn line_of(bytes: &[u8], offset: usize) -> usize {
    1 + bytes[..offset.min(bytes.len())].iter().filter(|&&b| b == b'\n').count()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRACK: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<gpx version="1.1" creator="test" xmlns="http://www.topografix.com/GPX/1/1">
  <wpt lat="48.85" lon="2.29"><time>2024-02-02T06:00:00Z</time><name>Caf&#233; &amp; Bar</name></wpt>
  <trk><name>Morning</name><trkseg>
    <trkpt lat="48.856826" lon="2.292713"><ele>154.4</ele><time>2024-02-02T06:44:58Z</time></trkpt>
    <trkpt lat="48.857" lon="2.293"><time>2024-02-02T06:45:58.250+00:00</time><extensions><x>1</x></extensions></trkpt>
    <trkpt lat="48.858" lon="2.294"/>
    <trkpt lat="95" lon="2.294"><time>2024-02-02T06:46:58Z</time></trkpt>
  </trkseg></trk>
</gpx>"#;

    #[test]
    fn track_points_and_waypoints_are_read_and_bad_points_named() {
        let parsed = read(TRACK.as_bytes()).unwrap();
        assert_eq!(
            parsed.entries[0],
            Entry::Waypoint { tst: 1706853600, lat: 48.85, lon: 2.29, desc: "Café & Bar".into() }
        );
        let Entry::Fix(first) = &parsed.entries[1] else { panic!("{:?}", parsed.entries[1]) };
        assert_eq!(
            (first.tst, first.lat, first.lon, first.alt),
            (1706856298, 48.856826, 2.292713, Some(154))
        );
        assert!(matches!(&parsed.entries[2], Entry::Fix(f) if f.tst == 1706856358));
        assert_eq!(parsed.entries.len(), 3);
        let reasons: Vec<_> =
            parsed.rejected.iter().map(|r| format!("{}: {}", r.position, r.reason)).collect();
        assert_eq!(reasons, ["line 7: no <time>", "line 8: latitude 95 out of range"]);
    }

    #[test]
    fn broken_xml_is_refused_with_its_line() {
        let broken = TRACK.replace("</trkseg>", "</trksegment>");
        let e = read(broken.as_bytes()).unwrap_err();
        assert!(e.position.starts_with("line 9"), "{e}");
        assert!(read(b"<html><body/></html>").unwrap_err().message.contains("not a GPX file"));
    }
}
