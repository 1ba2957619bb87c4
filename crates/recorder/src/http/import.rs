//! `POST /api/0/import?user=U&device=D[&format=F][&filename=N]`: a file of history from
//! elsewhere (GPX, GeoJSON, `.rec`, Google Takeout) into the owner's device, answered with the
//! import's summary. The body is the file, up to the configured size.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;

use super::access::Viewer;
use super::params::Params;
use super::{api, blocking, error, json, Api};
use crate::import::Format;

pub async fn import(
    State(api): State<Api>,
    viewer: Viewer,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Response> {
    let params = Params::from_parts(uri.query(), &headers);
    let (user, device) = api::device_of(&api, &viewer, &params)?;
    if !viewer.may_change(&user) {
        return Err(error(StatusCode::FORBIDDEN, "only the owner or an admin may import"));
    }
    let format = match params.get("format") {
        Some(name) => {
            Format::parse(name).ok_or_else(|| error(StatusCode::BAD_REQUEST, "unrecognized format"))?
        }
        None => Format::detect(params.get("filename").unwrap_or_default(), &body).ok_or_else(|| {
            error(StatusCode::BAD_REQUEST, "not a format that can be imported (give format=)")
        })?,
    };
    // Reading a large file is work: off the runtime, like the store calls.
    let parsed = tokio::task::spawn_blocking(move || format.read(&body))
        .await
        .map_err(|_| error(StatusCode::INTERNAL_SERVER_ERROR, "import task failed"))?
        .map_err(|e| error(StatusCode::BAD_REQUEST, &format!("nothing imported: {e}")))?;
    let recorder = api.recorder.clone();
    let summary = blocking(move || recorder.import(&user, &device, parsed, |_| {})).await?;
    Ok(json(StatusCode::OK, serde_json::to_string(&summary).unwrap_or_default()))
}
