//! The client side of launch links: ask a dashboard that already runs (in `mdld`, or in
//! another `mdlctl ui`) for a new one-time link, authenticated with the token file.
//!
//! One plain HTTP/1.1 request over loopback, so `mdlctl` needs no HTTP client library.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long to wait for a running dashboard to answer.
const TIMEOUT: Duration = Duration::from_secs(5);

/// The largest reply read (a launch link is far smaller).
const MAX_REPLY: u64 = 64 * 1024;

/// `POST /api/v1/launch` on the dashboard at `addr` with `token`: a new launch link.
pub async fn request_launch(addr: SocketAddr, token: &str) -> io::Result<String> {
    tokio::time::timeout(TIMEOUT, request(addr, token))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, format!("{addr} did not answer")))?
}

async fn request(addr: SocketAddr, token: &str) -> io::Result<String> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let head = format!(
        "POST /api/v1/launch HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
         Content-Length: 0\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await?;
    let mut reply = Vec::new();
    stream.take(MAX_REPLY).read_to_end(&mut reply).await?;
    let text = String::from_utf8_lossy(&reply);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| bad(addr, "no HTTP reply"))?;
    let status = head.split_whitespace().nth(1).unwrap_or("");
    if status != "200" {
        return Err(bad(
            addr,
            &format!("it answered {status} (another program, or another data directory's token?)"),
        ));
    }
    let value: serde_json::Value =
        serde_json::from_str(body.trim()).map_err(|_| bad(addr, "the reply is not JSON"))?;
    value["url"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| bad(addr, "the reply has no url"))
}

fn bad(addr: SocketAddr, why: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("{addr} is not an mdl dashboard that accepts our token: {why}"),
    )
}
