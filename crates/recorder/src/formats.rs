//! The output formats of `/api/0/locations` and `cauldron locations`: JSON, GeoJSON points,
//! GeoJSON POIs, a LineString, CSV, XML and GPX.

use serde_json::{json, Map, Value};

use crate::store::{Range, Store, StoreError};

/// An output format the Recorder knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    GeoJson,
    GeoJsonPoi,
    LineString,
    Csv,
    Xml,
    Gpx,
}

impl Format {
    pub fn parse(name: &str) -> Option<Format> {
        Some(match name.to_ascii_lowercase().as_str() {
            "json" => Format::Json,
            "geojson" => Format::GeoJson,
            "geojsonpoi" => Format::GeoJsonPoi,
            "linestring" => Format::LineString,
            "csv" => Format::Csv,
            "xml" => Format::Xml,
            "gpx" => Format::Gpx,
            _ => return None,
        })
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Json | Format::GeoJson | Format::GeoJsonPoi | Format::LineString => "application/json",
            Format::Csv => "text/csv",
            Format::Xml => "application/xml",
            Format::Gpx => "application/gpx+xml",
        }
    }

    /// A device's locations in `range` from `store`, rendered (what `/api/0/locations` answers).
    pub fn locations(
        self,
        store: &dyn Store,
        user: &str,
        device: &str,
        range: Range,
        fields: &[String],
        version: &str,
    ) -> Result<String, StoreError> {
        let points = store.locations(user, device, range)?;
        // The common case, a whole history as JSON, skips parsing each stored object.
        if self == Format::Json && fields.is_empty() {
            let texts = points.iter().map(|p| crate::view::point_json(p, user, device)).collect();
            return Ok(json_envelope(texts, version));
        }
        let objects = points.iter().map(|p| crate::view::point(p, user, device)).collect();
        Ok(self.render(objects, fields, version))
    }

    /// Renders decorated points (oldest first); `fields` picks the JSON keys or CSV columns.
    pub fn render(self, points: Vec<Map<String, Value>>, fields: &[String], version: &str) -> String {
        match self {
            Format::Json => {
                let count = points.len();
                let data: Vec<Value> =
                    points.into_iter().map(|p| Value::Object(crate::view::only(p, fields))).collect();
                serde_json::to_string(
                    &json!({"count": count, "data": data, "status": 200, "version": version}),
                )
                .unwrap_or_default()
            }
            Format::GeoJson => feature_collection(points.iter().map(|p| feature(p, p.get("tid")))),
            Format::GeoJsonPoi => feature_collection(
                points.iter().filter(|p| p.contains_key("poi")).map(|p| feature(p, p.get("poi"))),
            ),
            Format::LineString => {
                let coordinates: Vec<Value> =
                    points.iter().map(|p| json!([num(p, "lon"), num(p, "lat")])).collect();
                json!({"type": "Feature", "geometry": {"type": "LineString", "coordinates": coordinates},
                       "properties": {}})
                .to_string()
            }
            Format::Csv => csv(&points, fields),
            Format::Xml => xml(&points, fields),
            Format::Gpx => gpx(&points),
        }
    }
}

/// The JSON format's envelope around points already rendered as JSON text.
fn json_envelope(points: Vec<String>, version: &str) -> String {
    let version = Value::from(version).to_string();
    let mut out = String::with_capacity(points.iter().map(|p| p.len() + 1).sum::<usize>() + 64);
    out.push_str(&format!("{{\"count\":{},\"data\":[", points.len()));
    out.push_str(&points.join(","));
    out.push_str(&format!("],\"status\":200,\"version\":{version}}}"));
    out
}

fn num(point: &Map<String, Value>, key: &str) -> Value {
    point.get(key).cloned().unwrap_or(Value::Null)
}

fn feature(point: &Map<String, Value>, name: Option<&Value>) -> Value {
    json!({
        "type": "Feature",
        "geometry": {"type": "Point", "coordinates": [num(point, "lon"), num(point, "lat")]},
        "properties": {
            "name": name.cloned().unwrap_or(Value::Null),
            "vel": num(point, "vel"), "tst": num(point, "tst"), "acc": num(point, "acc"),
            "alt": num(point, "alt"), "address": num(point, "addr"), "isotst": num(point, "isotst"),
        },
    })
}

fn feature_collection(features: impl Iterator<Item = Value>) -> String {
    json!({"type": "FeatureCollection", "features": features.collect::<Vec<_>>()}).to_string()
}

/// A JSON value as a bare CSV or XML field (strings unquoted, absent empty).
fn plain(value: Option<&Value>) -> String {
    match value {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// The keys a CSV or XML point has when no `fields` are asked for: the first point's plain
/// values, as the Recorder takes them (`_type` says nothing here).
fn columns<'a>(points: &'a [Map<String, Value>], fields: &'a [String]) -> Vec<&'a str> {
    if !fields.is_empty() {
        return fields.iter().map(String::as_str).collect();
    }
    let Some(first) = points.first() else { return Vec::new() };
    first
        .iter()
        .filter(|(key, value)| *key != "_type" && !matches!(value, Value::Object(_) | Value::Array(_)))
        .map(|(key, _)| key.as_str())
        .collect()
}

fn csv(points: &[Map<String, Value>], fields: &[String]) -> String {
    let columns = columns(points, fields);
    if columns.is_empty() {
        return String::new();
    }
    let mut out = columns.join(",");
    out.push('\n');
    for point in points {
        let row: Vec<String> = columns.iter().map(|c| csv_field(&plain(point.get(*c)))).collect();
        out.push_str(&row.join(","));
        out.push('\n');
    }
    out
}

/// Quotes a CSV field when it holds a separator, quote or line break (RFC 4180).
fn csv_field(text: &str) -> String {
    match text.contains([',', '"', '\n', '\r']) {
        true => format!("\"{}\"", text.replace('"', "\"\"")),
        false => text.to_string(),
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// The Recorder's XML: a stylesheet line, then one `<point>` per location with an element per
/// field (empty for an asked-for field the point lacks); the point's own keys without `fields`.
fn xml(points: &[Map<String, Value>], fields: &[String]) -> String {
    let mut out = String::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<?xml-stylesheet type=\"text/xsl\" href=\"owntracks.xsl\"?>\n<owntracks>\n",
    );
    for point in points {
        out.push_str(" <point>\n");
        let keys: Vec<&str> = match fields.is_empty() {
            true => columns(std::slice::from_ref(point), fields),
            false => fields.iter().map(String::as_str).collect(),
        };
        for key in keys.into_iter().filter(|k| is_xml_name(k)) {
            match point.get(key).filter(|v| !matches!(v, Value::Object(_) | Value::Array(_))) {
                Some(value) => out.push_str(&format!("  <{key}>{}</{key}>\n", escape(&plain(Some(value))))),
                None => out.push_str(&format!("  <{key}/>\n")),
            }
        }
        out.push_str(" </point>\n");
    }
    out.push_str("</owntracks>\n");
    out
}

fn is_xml_name(key: &str) -> bool {
    key.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

fn gpx(points: &[Map<String, Value>]) -> String {
    let mut out = String::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<gpx version=\"1.1\" creator=\"cauldron\" \
         xmlns=\"http://www.topografix.com/GPX/1/1\">\n  <trk>\n    <trkseg>\n",
    );
    for point in points {
        out.push_str(&format!(
            "      <trkpt lat=\"{}\" lon=\"{}\">",
            plain(point.get("lat")),
            plain(point.get("lon"))
        ));
        if let Some(alt) = point.get("alt").filter(|v| v.is_number()) {
            out.push_str(&format!("<ele>{alt}</ele>"));
        }
        out.push_str(&format!("<time>{}</time></trkpt>\n", escape(&plain(point.get("isotst")))));
    }
    out.push_str("    </trkseg>\n  </trk>\n</gpx>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn points() -> Vec<Map<String, Value>> {
        let raw = [
            json!({"lat": 48.85, "lon": 2.29, "tst": 1706856298, "tid": "j1", "alt": 154, "isotst": "2024-02-02T06:44:58Z"}),
            json!({"lat": 48.87, "lon": 2.34, "tst": 1706857000, "tid": "j1", "poi": "Caf\u{e9}, \"Chez\"", "isotst": "2024-02-02T06:56:40Z"}),
        ];
        raw.into_iter().map(|v| v.as_object().unwrap().clone()).collect()
    }

    #[test]
    fn every_format_renders_the_points() {
        let p = points();
        let json: Value = serde_json::from_str(&Format::Json.render(p.clone(), &[], "v")).unwrap();
        assert_eq!(json["count"], 2);
        assert_eq!(json["data"][1]["poi"], "Caf\u{e9}, \"Chez\"");
        let only: Value =
            serde_json::from_str(&Format::Json.render(p.clone(), &["lat".into()], "v")).unwrap();
        assert_eq!(only["data"][0], json!({"lat": 48.85}));
        let geo: Value = serde_json::from_str(&Format::GeoJson.render(p.clone(), &[], "v")).unwrap();
        assert_eq!(geo["features"][0]["geometry"]["coordinates"], json!([2.29, 48.85]));
        assert_eq!(geo["features"][0]["properties"]["name"], "j1");
        let poi: Value = serde_json::from_str(&Format::GeoJsonPoi.render(p.clone(), &[], "v")).unwrap();
        assert_eq!(poi["features"].as_array().unwrap().len(), 1);
        let line: Value = serde_json::from_str(&Format::LineString.render(p.clone(), &[], "v")).unwrap();
        assert_eq!(line["geometry"]["coordinates"][1], json!([2.34, 48.87]));
        let csv = Format::Csv.render(p.clone(), &["tst".into(), "poi".into()], "v");
        assert_eq!(csv, "tst,poi\n1706856298,\n1706857000,\"Caf\u{e9}, \"\"Chez\"\"\"\n");
        let gpx = Format::Gpx.render(p.clone(), &[], "v");
        assert!(gpx.contains(
            "<trkpt lat=\"48.85\" lon=\"2.29\"><ele>154</ele><time>2024-02-02T06:44:58Z</time></trkpt>"
        ));
        let xml = Format::Xml.render(p.clone(), &[], "v");
        assert!(xml.contains("<?xml-stylesheet type=\"text/xsl\" href=\"owntracks.xsl\"?>"), "{xml}");
        assert!(xml.contains("  <poi>Caf\u{e9}, &quot;Chez&quot;</poi>\n"), "{xml}");
        let picked = Format::Xml.render(p.clone(), &["lat".into(), "poi".into()], "v");
        assert!(picked.contains(" <point>\n  <lat>48.85</lat>\n  <poi/>\n </point>\n"), "{picked}");
        // CSV without fields: the first point's keys.
        let csv = Format::Csv.render(p.clone(), &[], "v");
        assert_eq!(csv.lines().next(), Some("alt,isotst,lat,lon,tid,tst"));
        assert!(csv.ends_with("\n,2024-02-02T06:56:40Z,48.87,2.34,j1,1706857000\n"), "{csv}");
        assert_eq!(Format::Csv.render(Vec::new(), &[], "v"), "");
        assert_eq!(Format::parse("kml"), None);
    }
}
