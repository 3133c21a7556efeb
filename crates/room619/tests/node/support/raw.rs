//! Raw-socket helpers: write bytes, read what the server answers.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// What a raw exchange saw.
pub struct Exchange {
    /// Every byte the server sent.
    pub received: Vec<u8>,
    /// Whether the server closed the connection (rather than `limit` passing).
    pub closed: bool,
}

impl Exchange {
    /// The received bytes as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.received).into_owned()
    }

    /// The first status line.
    pub fn status_line(&self) -> String {
        self.text().lines().next().unwrap_or_default().to_owned()
    }

    /// How many HTTP/1.1 responses the server sent.
    pub fn responses(&self) -> usize {
        self.text().matches("HTTP/1.1 ").count()
    }
}

/// Reads until the server closes or `limit` passes.
pub async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> Exchange {
    let mut received = Vec::new();
    let mut buf = [0_u8; 4096];
    let deadline = Instant::now() + limit;
    loop {
        let Some(left) = deadline.checked_duration_since(Instant::now()) else {
            return Exchange {
                received,
                closed: false,
            };
        };
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Err(_) => {
                return Exchange {
                    received,
                    closed: false,
                };
            }
            Ok(Ok(0) | Err(_)) => {
                return Exchange {
                    received,
                    closed: true,
                };
            }
            Ok(Ok(n)) => received.extend_from_slice(&buf[..n]),
        }
    }
}

/// Connects, writes `request` (ignoring a write the server cut short), and
/// reads until the server closes or `limit` passes.
pub async fn exchange(addr: SocketAddr, request: &[u8], limit: Duration) -> Exchange {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let _cut_short = stream.write_all(request).await;
    read_until_closed(&mut stream, limit).await
}
