//! The floor for `jaring bench time`: a bare tokio server that answers every line with
//! `JAM hh:mm:ss` (UTC) and nothing else: no framing limits, no timeouts, no logging, no QUIT
//! handling beyond closing when the client does. Usage: `bare-time-server PORT`.

use std::time::{SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let port: u16 = std::env::args()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(45001);
    let listener = TcpListener::bind(("0.0.0.0", port)).await?;
    loop {
        let (mut stream, _) = listener.accept().await?;
        tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            let mut out = Vec::with_capacity(4096);
            loop {
                let n = match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                let mut quit = false;
                for line in buf[..n].split_inclusive(|&b| b == b'\n') {
                    if line.starts_with(b"QUIT") {
                        quit = true;
                        break;
                    }
                    if line.ends_with(b"\n") {
                        let t = SystemTime::now()
                            .duration_since(UNIX_EPOCH)
                            .map_or(0, |d| d.as_secs());
                        let [h, m, s] = [t / 3600 % 24, t / 60 % 60, t % 60].map(|v| v as u8);
                        let d = |v: u8| [b'0' + v / 10, b'0' + v % 10];
                        out.extend_from_slice(b"JAM ");
                        out.extend_from_slice(&d(h));
                        out.push(b':');
                        out.extend_from_slice(&d(m));
                        out.push(b':');
                        out.extend_from_slice(&d(s));
                        out.extend_from_slice(b"\r\n");
                    }
                }
                if stream.write_all(&out).await.is_err() || quit {
                    return;
                }
                out.clear();
            }
        });
    }
}
