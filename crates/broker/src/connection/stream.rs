//! The byte stream a connection runs on. Plain TCP, most connections, is held as itself: no
//! box or indirect call per read, and an idle one can leave tokio's reactor to park
//! (`parking`). Every other transport (a Unix socket, TLS, WebSocket) is boxed behind one
//! trait.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};

/// A byte stream MQTT runs on: TCP, a Unix socket, TLS or WebSocket.
pub(crate) trait Transport: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Transport for T {}

pub(crate) enum Stream {
    Tcp(TcpStream),
    Boxed(Box<dyn Transport>),
}

/// How an accepted socket becomes a [`Stream`] when nothing (TLS, WebSocket) wraps it.
pub(crate) trait IntoStream {
    fn into_stream(self) -> Stream;
}

impl IntoStream for TcpStream {
    fn into_stream(self) -> Stream {
        Stream::Tcp(self)
    }
}

impl IntoStream for UnixStream {
    fn into_stream(self) -> Stream {
        Stream::Boxed(Box::new(self))
    }
}

impl Stream {
    /// Any other transport, boxed.
    pub(crate) fn boxed(transport: impl Transport + 'static) -> Stream {
        Stream::Boxed(Box::new(transport))
    }

    pub(super) fn is_tcp(&self) -> bool {
        matches!(self, Stream::Tcp(_))
    }
}

/// One arm per transport, each the same call.
macro_rules! each {
    ($self:ident, $s:ident => $call:expr) => {
        match $self.get_mut() {
            Stream::Tcp($s) => {
                let $s = Pin::new($s);
                $call
            }
            Stream::Boxed($s) => {
                let $s = Pin::new(&mut **$s);
                $call
            }
        }
    };
}

impl AsyncRead for Stream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        each!(self, s => s.poll_read(cx, buf))
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        each!(self, s => s.poll_write(cx, buf))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each!(self, s => s.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each!(self, s => s.poll_shutdown(cx))
    }
}
