//! The PROXY protocol (HAProxy, versions 1 and 2): behind a load balancer, the first bytes of a
//! connection say who the client really is. Read exactly the header, never a byte of MQTT.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use tokio::io::{AsyncRead, AsyncReadExt};

const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// The longest v1 line the specification allows, CRLF included.
const V1_MAX: usize = 107;

fn invalid(message: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.into())
}

/// Reads a PROXY header and returns the client address it names (`None` for a `LOCAL` or
/// `UNKNOWN` connection, such as the balancer's own health check).
pub(crate) async fn read_header<R: AsyncRead + Unpin>(reader: &mut R) -> io::Result<Option<SocketAddr>> {
    let mut start = [0u8; 12];
    reader.read_exact(&mut start[..5]).await?;
    if &start[..5] == b"PROXY" {
        return read_v1(reader).await;
    }
    reader.read_exact(&mut start[5..]).await?;
    if start != V2_SIGNATURE {
        return Err(invalid("no PROXY protocol header"));
    }
    let mut head = [0u8; 4];
    reader.read_exact(&mut head).await?;
    let (version_command, family, len) = (head[0], head[1], u16::from_be_bytes([head[2], head[3]]) as usize);
    if version_command >> 4 != 2 {
        return Err(invalid("PROXY v2 header with another version"));
    }
    let mut body = vec![0u8; len];
    reader.read_exact(&mut body).await?;
    if version_command & 0x0f == 0 {
        return Ok(None); // LOCAL
    }
    parse_v2_addresses(family, &body)
}

fn parse_v2_addresses(family: u8, body: &[u8]) -> io::Result<Option<SocketAddr>> {
    let port = |b: &[u8]| u16::from_be_bytes([b[0], b[1]]);
    match family >> 4 {
        // AF_INET: source, destination, source port, destination port.
        1 if body.len() >= 12 => {
            let ip = Ipv4Addr::new(body[0], body[1], body[2], body[3]);
            Ok(Some(SocketAddr::new(IpAddr::V4(ip), port(&body[8..10]))))
        }
        2 if body.len() >= 36 => {
            let ip: [u8; 16] = body[..16].try_into().expect("sixteen bytes");
            Ok(Some(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(ip)), port(&body[32..34]))))
        }
        0 | 3 => Ok(None), // unspecified, or AF_UNIX: nothing to say about an IP
        _ => Err(invalid("PROXY v2 address block too short")),
    }
}

async fn read_v1<R: AsyncRead + Unpin>(reader: &mut R) -> io::Result<Option<SocketAddr>> {
    let mut line = b"PROXY".to_vec();
    while !line.ends_with(b"\r\n") {
        if line.len() >= V1_MAX {
            return Err(invalid("PROXY v1 line too long"));
        }
        line.push(reader.read_u8().await?);
    }
    let text =
        std::str::from_utf8(&line[..line.len() - 2]).map_err(|_| invalid("PROXY v1 line is not text"))?;
    let parts: Vec<&str> = text.split(' ').collect();
    match parts.as_slice() {
        ["PROXY", "UNKNOWN", ..] => Ok(None),
        ["PROXY", "TCP4" | "TCP6", source, _destination, source_port, _destination_port] => {
            let ip: IpAddr = source.parse().map_err(|_| invalid(format!("bad source address {source:?}")))?;
            let port: u16 =
                source_port.parse().map_err(|_| invalid(format!("bad source port {source_port:?}")))?;
            Ok(Some(SocketAddr::new(ip, port)))
        }
        _ => Err(invalid(format!("bad PROXY v1 line {text:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn parse(bytes: &[u8]) -> (io::Result<Option<SocketAddr>>, Vec<u8>) {
        let mut reader = bytes;
        let result = read_header(&mut reader).await;
        (result, reader.to_vec())
    }

    #[tokio::test]
    async fn v1_and_v2_headers_and_nothing_more() {
        let (addr, rest) = parse(b"PROXY TCP4 203.0.113.7 10.0.0.1 51234 1883\r\n\x10\x0c").await;
        assert_eq!(addr.unwrap(), Some("203.0.113.7:51234".parse().unwrap()));
        assert_eq!(rest, b"\x10\x0c", "the MQTT bytes after the header are left alone");
        let (addr, _) = parse(b"PROXY TCP6 2001:db8::1 2001:db8::2 4000 1883\r\n").await;
        assert_eq!(addr.unwrap(), Some("[2001:db8::1]:4000".parse().unwrap()));
        assert_eq!(parse(b"PROXY UNKNOWN\r\n").await.0.unwrap(), None);

        let mut v2 = V2_SIGNATURE.to_vec();
        v2.extend_from_slice(&[0x21, 0x11, 0, 12, 198, 51, 100, 9, 10, 0, 0, 1, 0x1f, 0x90, 0x07, 0x5b]);
        v2.extend_from_slice(b"\x10");
        let (addr, rest) = parse(&v2).await;
        assert_eq!(addr.unwrap(), Some("198.51.100.9:8080".parse().unwrap()));
        assert_eq!(rest, b"\x10");
        let mut local = V2_SIGNATURE.to_vec();
        local.extend_from_slice(&[0x20, 0x00, 0, 0]);
        assert_eq!(parse(&local).await.0.unwrap(), None);
    }

    #[tokio::test]
    async fn garbage_is_an_error() {
        assert!(parse(b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c").await.0.is_err());
        assert!(parse(b"PROXY TCP4 nonsense\r\n").await.0.is_err());
        let long = format!("PROXY {}\r\n", "x".repeat(200));
        assert!(parse(long.as_bytes()).await.0.is_err());
    }
}
