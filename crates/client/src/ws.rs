//! MQTT over WebSocket [MQTT-6.0]: the client's opening handshake (the `mqtt` subprotocol), and
//! an adapter that carries MQTT as a byte stream over binary messages, so packets need not line
//! up with frames [MQTT-6.0.0-2]. The broker uses the same adapter on its side.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes};
use futures_util::{Sink, Stream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// A WebSocket carrying MQTT as a byte stream: reads return the bytes of binary messages in
/// order, each write goes out as one binary message.
///
/// ```no_run
/// # async fn demo(socket: tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>) {
/// use tokio::io::AsyncWriteExt;
/// let mut stream = cauldron_client::ws::WsStream::new(socket);
/// stream.write_all(&[0xC0, 0x00]).await.unwrap(); // PINGREQ, in one binary message
/// # }
/// ```
pub struct WsStream<S> {
    socket: WebSocketStream<S>,
    /// What is left of the last binary message.
    read: Bytes,
}

impl<S> WsStream<S> {
    /// Wraps a WebSocket whose handshake is done (see the type's example).
    pub fn new(socket: WebSocketStream<S>) -> WsStream<S> {
        WsStream { socket, read: Bytes::new() }
    }
}

/// Opens the WebSocket on `stream` (TCP or TLS) for `url` (`ws://host:port/path`), asking for
/// the `mqtt` subprotocol [MQTT-6.0.0-3].
pub(crate) async fn connect<S>(stream: S, url: &str) -> io::Result<WsStream<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut request =
        url.into_client_request().map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    request.headers_mut().insert("Sec-WebSocket-Protocol", HeaderValue::from_static("mqtt"));
    let (socket, _) = tokio_tungstenite::client_async(request, stream).await.map_err(io::Error::other)?;
    Ok(WsStream::new(socket))
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
