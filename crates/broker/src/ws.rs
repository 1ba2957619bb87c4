//! MQTT over WebSocket [MQTT-6.0]: the server's side of the handshake (path and the `mqtt`
//! subprotocol). The byte-stream adapter over binary messages is the client crate's
//! [`WsStream`], shared so both ends frame MQTT the same way [MQTT-6.0.0-2].

pub(crate) use cauldron_client::ws::WsStream;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};

/// Accepts the WebSocket upgrade on `path`, choosing the `mqtt` subprotocol when offered.
// The refusal type is tungstenite's (an HTTP response), so its size is not ours to choose.
#[allow(clippy::result_large_err)]
pub(crate) async fn accept<S>(
    stream: S,
    path: &str,
) -> Result<WsStream<S>, tokio_tungstenite::tungstenite::Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let check = |request: &Request, mut response: Response| -> Result<Response, ErrorResponse> {
        if request.uri().path() != path {
            let mut refusal = ErrorResponse::new(Some("no MQTT here".into()));
            *refusal.status_mut() = StatusCode::NOT_FOUND;
            return Err(refusal);
        }
        let offered = request.headers().get_all("Sec-WebSocket-Protocol");
        let protocols = offered.iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(','));
        if let Some(chosen) = protocols.map(str::trim).find(|p| matches!(*p, "mqtt" | "mqttv3.1")) {
            // [MQTT-6.0.0-3]: the server selects one of the subprotocols the client offered.
            let value = HeaderValue::from_str(chosen).expect("a known token is a valid header value");
            response.headers_mut().insert("Sec-WebSocket-Protocol", value);
        }
        Ok(response)
    };
    let socket = tokio_tungstenite::accept_hdr_async(stream, check).await?;
    Ok(WsStream::new(socket))
}
