//! MQTT over WebSocket [MQTT-6.0]: the handshake (path and the `mqtt` subprotocol), and an
//! adapter that turns the binary messages into the byte stream the connection task reads, so
//! packets need not line up with frames [MQTT-6.0.0-2].

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes};
use futures_util::{Sink, Stream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// Accepts the WebSocket upgrade on `path`, choosing the `mqtt` subprotocol when offered.
// The refusal type is tungstenite's (an HTTP response), so its size is not ours to choose.
#[allow(clippy::result_large_err)]
pub async fn accept<S>(stream: S, path: &str) -> Result<WsStream<S>, tokio_tungstenite::tungstenite::Error>
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
    Ok(WsStream { socket, read: Bytes::new() })
}

/// A WebSocket carrying MQTT as a byte stream.
pub struct WsStream<S> {
    socket: WebSocketStream<S>,
    /// What is left of the last binary message.
    read: Bytes,
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for WsStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            if !self.read.is_empty() {
                let n = self.read.len().min(buf.remaining());
                buf.put_slice(&self.read[..n]);
                self.read.advance(n);
                return Poll::Ready(Ok(()));
            }
            match ready!(Pin::new(&mut self.socket).poll_next(cx)) {
                Some(Ok(Message::Binary(data))) => self.read = data,
                // Pings are answered by tungstenite itself; pongs carry nothing for us.
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                // MQTT travels in binary frames only [MQTT-6.0.0-1].
                Some(Ok(Message::Text(_))) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "[MQTT-6.0.0-1] text frame",
                    )));
                }
                Some(Ok(Message::Close(_))) | None => return Poll::Ready(Ok(())),
                Some(Err(e)) => return Poll::Ready(Err(io::Error::other(e))),
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for WsStream<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        ready!(Pin::new(&mut self.socket).poll_ready(cx)).map_err(io::Error::other)?;
        Pin::new(&mut self.socket)
            .start_send(Message::Binary(Bytes::copy_from_slice(data)))
            .map_err(io::Error::other)?;
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.socket).poll_flush(cx).map_err(io::Error::other)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.socket).poll_close(cx).map_err(io::Error::other)
    }
}
