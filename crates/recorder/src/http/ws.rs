//! `/ws/last`: the live feed. The client sends `LAST` to get every visible device's last
//! position; after that each recorded location, transition or beacon is pushed as it arrives,
//! filtered by the `user`/`device` parameters and by what the viewer may see.

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use tokio::sync::broadcast::error::RecvError;

use super::access::Viewer;
use super::api::last_objects;
use super::params::Params;
use super::Api;

pub async fn last(
    upgrade: WebSocketUpgrade,
    State(api): State<Api>,
    viewer: Viewer,
    headers: HeaderMap,
    params: Params,
) -> Response {
    if !same_origin(&headers) && super::cors::allowed_origin(&api, &headers).is_none() {
        // A page on another site must not read someone's friends through their browser's
        // login (cross-site WebSocket hijacking).
        return (StatusCode::FORBIDDEN, "WebSocket from another origin\n").into_response();
    }
    let filter = Filter { user: params.name("user"), device: params.name("device") };
    upgrade.on_upgrade(move |socket| feed(socket, api, viewer, filter))
}

/// No `Origin` (not a browser) or one naming the host the request was sent to.
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let origin_host = origin.to_str().ok().and_then(|o| o.split_once("://")).map(|(_, rest)| rest);
    matches!((origin_host, host), (Some(o), Some(h)) if o.eq_ignore_ascii_case(h))
}

struct Filter {
    user: Option<String>,
    device: Option<String>,
}

impl Filter {
    fn passes(&self, user: &str, device: &str) -> bool {
        self.user.as_ref().is_none_or(|u| u == user) && self.device.as_ref().is_none_or(|d| d == device)
    }
}

async fn feed(mut socket: WebSocket, api: Api, viewer: Viewer, filter: Filter) {
    let mut live = api.recorder.subscribe_live();
    loop {
        tokio::select! {
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Text(text))) if text.trim() == "LAST" => {
                    let Ok(lasts) = last_objects(&api, viewer.clone(), filter.user.clone(), filter.device.clone()).await
                    else { break };
                    for object in lasts {
                        if socket.send(Message::Text(Value::Object(object).to_string().into())).await.is_err() {
                            return;
                        }
                    }
                }
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                Some(Ok(_)) => {}
            },
            event = live.recv() => match event {
                Ok(event) => {
                    if filter.passes(&event.user, &event.device) && api.access.may_see(&viewer, &event.user, &event.device)
                        && socket.send(Message::Text(event.json.clone().into())).await.is_err()
                    {
                        break;
                    }
                }
                // A slow browser misses some pushes; it still gets the next ones.
                Err(RecvError::Lagged(missed)) => tracing::debug!(missed, "/ws/last client fell behind"),
                Err(RecvError::Closed) => break,
            },
        }
    }
}
