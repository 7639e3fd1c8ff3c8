//! `jaring echo client`: one message, a message repeated, lines typed or piped, or a whole file,
//! each checked against what came back.

use std::io::{self, Write};
use std::net::SocketAddr;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use jaring_runtime::{ClientStream, ClientTls, DialError, connect};
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Bytes the client reads from the socket at a time unless `--chunk` says otherwise.
pub const DEFAULT_CHUNK: usize = 4096;

/// Largest `--chunk`: reads bigger than this gain nothing and would let one flag allocate at will.
pub const MAX_CHUNK: usize = 16 * 1024 * 1024;

/// Bytes a file echo reads from its input and writes at a time.
pub const FILE_BLOCK: usize = 256 * 1024;

/// Blocks of a file echo sent but not yet verified. When the echo lags this far behind, the
/// sender waits: with [`FILE_BLOCK`] this caps the client at 8 MiB whatever the file's size.
pub const FILE_WINDOW_BLOCKS: usize = 32;

/// Longest line `--interactive` sends; a longer one is refused with a message, not sent.
pub const MAX_LINE: usize = 64 * 1024;

/// Why the client failed. Every message names the server; data errors name the byte offset.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Resolving or connecting failed.
    #[error(transparent)]
    Dial(#[from] DialError),
    /// The server closed the connection before echoing everything.
    #[error(
        "{server}: connection closed at byte offset {offset}: {expected} bytes were sent, {offset} came back"
    )]
    Closed {
        /// The server's address.
        server: SocketAddr,
        /// Bytes that came back before the close.
        offset: u64,
        /// Bytes sent.
        expected: u64,
    },
    /// What came back differs from what was sent.
    #[error("{server}: echo differs at byte offset {offset}: sent 0x{sent:02x}, got 0x{got:02x}")]
    Mismatch {
        /// The server's address.
        server: SocketAddr,
        /// Offset of the first differing byte.
        offset: u64,
        /// The byte sent there.
        sent: u8,
        /// The byte that came back.
        got: u8,
    },
    /// More came back than was sent.
    #[error("{server}: the echo is longer than what was sent, from byte offset {offset}")]
    Extra {
        /// The server's address.
        server: SocketAddr,
        /// Bytes sent, where the surplus starts.
        offset: u64,
    },
    /// Nothing came back for too long.
    #[error("{server}: no echo for {secs} s at byte offset {offset}", secs = .timeout.as_secs_f64())]
    Timeout {
        /// The server's address.
        server: SocketAddr,
        /// Bytes that came back before the silence.
        offset: u64,
        /// The limit that passed.
        timeout: Duration,
    },
    /// Reading or writing the socket failed.
    #[error("{server}: connection failed at byte offset {offset}")]
    Io {
        /// The server's address.
        server: SocketAddr,
        /// Bytes that came back before the failure.
        offset: u64,
        /// The socket error.
        source: io::Error,
    },
    /// Reading the file (or stdin) to send failed.
    #[error("cannot read {name}")]
    Input {
        /// The file, or `stdin`.
        name: String,
        /// What the system said.
        source: io::Error,
    },
    /// Writing our output failed (e.g. a closed pipe).
    #[error("cannot write output")]
    Output(#[source] io::Error),
}

/// Where to connect and how long to wait.
#[derive(Debug, Clone)]
pub struct Target {
    /// Host name or address of the server.
    pub host: String,
    /// Server port.
    pub port: u16,
    /// Limit on connecting (and the TLS handshake), and on waiting for the echo to make progress.
    pub timeout: Duration,
    /// TLS, if the server is to be spoken to over it (echo serves TLS on a port of its own).
    pub tls: Option<ClientTls>,
}

/// A connected echo client.
#[derive(Debug)]
pub struct Client {
    stream: ClientStream,
    server: SocketAddr,
    timeout: Duration,
}

impl Client {
    /// Connects to the target, trying each address it resolves to in turn.
    pub async fn connect(target: &Target) -> Result<Self, ClientError> {
        let stream = connect(
            &target.host,
            target.port,
            target.timeout,
            target.tls.as_ref(),
        )
        .await?;
        let server = stream.tcp().peer_addr().map_err(|source| {
            ClientError::Dial(DialError::Connect {
                host: target.host.clone(),
                port: target.port,
                source,
            })
        })?;
        Ok(Self {
            stream,
            server,
            timeout: target.timeout,
        })
    }

    /// The server's address.
    pub fn server(&self) -> SocketAddr {
        self.server
    }

    /// Sends `message` and reads until as many bytes came back, `chunk` bytes at a time at most,
    /// calling `on_chunk` with each read as it arrives. Returns the echo, checked byte for byte.
    pub async fn round_trip(
        &mut self,
        message: &[u8],
        chunk: usize,
        mut on_chunk: impl FnMut(&[u8]),
    ) -> Result<Vec<u8>, ClientError> {
        let server = self.server;
        let sent = async {
            self.stream.write_all(message).await?;
            // TLS holds the last record until flushed.
            self.stream.flush().await
        };
        sent.await.map_err(|source| ClientError::Io {
            server,
            offset: 0,
            source,
        })?;
        let mut echo = vec![0u8; message.len()];
        let mut have = 0;
        let chunk = chunk.clamp(1, MAX_CHUNK);
        while have < echo.len() {
            let end = (have + chunk).min(echo.len());
            let n = self.read_some(&mut echo[have..end], have as u64).await?;
            if n == 0 {
                return Err(ClientError::Closed {
                    server,
                    offset: have as u64,
                    expected: message.len() as u64,
                });
            }
            on_chunk(&echo[have..have + n]);
            have += n;
        }
        if let Some(offset) = first_difference(message, &echo) {
            return Err(ClientError::Mismatch {
                server,
                offset: offset as u64,
                sent: message[offset],
                got: echo[offset],
            });
        }
        Ok(echo)
    }

    /// Whether the connection is TLS, and its version and cipher suite (`None`: plaintext).
    pub fn tls_summary(&self) -> Option<String> {
        self.stream.tls_summary()
    }

    /// Closes our sending side (over TLS: close_notify, then the TCP half-close) and waits briefly for the server's close, so that the server, not
    /// this client, is left holding the TIME_WAIT; bytes that still arrive are an error.
    pub async fn finish(mut self) -> Result<(), ClientError> {
        let server = self.server;
        let _ = self.stream.shutdown().await;
        let mut byte = [0u8; 1];
        match tokio::time::timeout(Duration::from_secs(1), self.stream.read(&mut byte)).await {
            Ok(Ok(1..)) => Err(ClientError::Extra { server, offset: 0 }),
            _ => Ok(()),
        }
    }

    async fn read_some(&mut self, buf: &mut [u8], offset: u64) -> Result<usize, ClientError> {
        let server = self.server;
        match tokio::time::timeout(self.timeout, self.stream.read(buf)).await {
            Ok(Ok(n)) => Ok(n),
            Ok(Err(source)) => Err(ClientError::Io {
                server,
                offset,
                source,
            }),
            Err(_) => Err(ClientError::Timeout {
                server,
                offset,
                timeout: self.timeout,
            }),
        }
    }
}

fn first_difference(a: &[u8], b: &[u8]) -> Option<usize> {
    // Slice equality is one memcmp; the byte walk runs only to name the offset of a mismatch.
    if a == b {
        return None;
    }
    a.iter().zip(b).position(|(x, y)| x != y)
}

/// `jaring echo client MESSAGE`: one round trip; the echo goes to `out`, and with `verbose` each
/// chunk as it arrives goes to `log`, so the lab's "data arrives in pieces" can be seen.
pub async fn message(
    target: &Target,
    message: &[u8],
    chunk: usize,
    verbose: bool,
    out: &mut impl Write,
    log: &mut impl Write,
) -> Result<(), ClientError> {
    let mut client = Client::connect(target).await?;
    if verbose && let Some(tls) = client.tls_summary() {
        writeln!(log, "TLS: {tls}").map_err(ClientError::Output)?;
    }
    let mut pieces = 0u64;
    let mut log_err = None;
    let echo = client
        .round_trip(message, chunk, |piece| {
            pieces += 1;
            if verbose && log_err.is_none() {
                log_err = writeln!(
                    log,
                    "chunk {pieces}: {} bytes: {}",
                    piece.len(),
                    String::from_utf8_lossy(piece).escape_debug()
                )
                .err();
            }
        })
        .await?;
    if let Some(e) = log_err {
        return Err(ClientError::Output(e));
    }
    out.write_all(&echo).map_err(ClientError::Output)?;
    writeln!(out).map_err(ClientError::Output)?;
    client.finish().await
}

/// `--repeat N --interval SECS`: the same message N times on one connection, each echo printed
/// after the local time it arrived, so a server that serves one client at a time shows itself.
pub async fn repeat(
    target: &Target,
    message: &[u8],
    count: u64,
    interval: Duration,
    out: &mut impl Write,
) -> Result<(), ClientError> {
    let mut client = Client::connect(target).await?;
    for i in 0..count {
        if i > 0 && !interval.is_zero() {
            tokio::time::sleep(interval).await;
        }
        let echo = client.round_trip(message, MAX_CHUNK, |_| {}).await?;
        let now = jiff::Zoned::now();
        writeln!(
            out,
            "[{}] {}",
            now.strftime("%H:%M:%S%.3f"),
            String::from_utf8_lossy(&echo)
        )
        .map_err(ClientError::Output)?;
        out.flush().map_err(ClientError::Output)?;
    }
    client.finish().await
}

/// One line for `--interactive`, and whom to tell once its echo is printed.
#[derive(Debug)]
pub struct Line {
    /// The line, without its newline.
    pub text: String,
    /// Told when the echo has been printed, so a prompt does not appear before it.
    pub printed: Option<std::sync::mpsc::SyncSender<()>>,
}

impl From<String> for Line {
    fn from(text: String) -> Self {
        Self {
            text,
            printed: None,
        }
    }
}

/// `--interactive`: each line from `lines` is sent (with its newline) and its echo printed, until
/// the lines end or one is `exit`.
pub async fn interactive(
    target: &Target,
    mut lines: mpsc::Receiver<Line>,
    out: &mut impl Write,
) -> Result<(), ClientError> {
    let mut client = Client::connect(target).await?;
    while let Some(Line { text, printed }) = lines.recv().await {
        // Whatever happens to this line, the reader may go on (or end).
        let _ack = Ack(printed);
        if text.trim() == "exit" {
            break;
        }
        if text.len() > MAX_LINE {
            writeln!(
                out,
                "line not sent: {} bytes is over the {MAX_LINE}-byte limit",
                text.len()
            )
            .map_err(ClientError::Output)?;
            continue;
        }
        let mut message = text.into_bytes();
        message.push(b'\n');
        let echo = client.round_trip(&message, MAX_CHUNK, |_| {}).await?;
        out.write_all(&echo).map_err(ClientError::Output)?;
        out.flush().map_err(ClientError::Output)?;
    }
    client.finish().await
}

/// Tells the line reader to go on when dropped.
struct Ack(Option<std::sync::mpsc::SyncSender<()>>);

impl Drop for Ack {
    fn drop(&mut self) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(());
        }
    }
}

/// Starts a thread that reads lines for `--interactive`: with line editing and history at a
/// terminal, plain lines otherwise. The thread ends at EOF, `exit`, Ctrl-C or Ctrl-D.
pub fn read_lines(terminal: bool) -> mpsc::Receiver<Line> {
    let (tx, rx) = mpsc::channel(1);
    std::thread::spawn(move || {
        if terminal && let Ok(mut editor) = rustyline::DefaultEditor::new() {
            while let Ok(text) = editor.readline("echo> ") {
                let _ = editor.add_history_entry(text.as_str());
                let exit = text.trim() == "exit";
                // The next prompt waits until this line's echo is on the screen.
                let (printed, wait) = std::sync::mpsc::sync_channel(1);
                let line = Line {
                    text,
                    printed: Some(printed),
                };
                if tx.blocking_send(line).is_err() || wait.recv().is_err() || exit {
                    return;
                }
            }
            return;
        }
        let stdin = io::stdin();
        let mut text = String::new();
        loop {
            text.clear();
            match io::BufRead::read_line(&mut stdin.lock(), &mut text) {
                Ok(0) | Err(_) => return,
                Ok(_) => {
                    let line = text.trim_end_matches(['\n', '\r']).to_owned();
                    if tx.blocking_send(line.into()).is_err() {
                        return;
                    }
                }
            }
        }
    });
    rx
}

/// What a file echo measured.
#[derive(Debug, Clone, PartialEq)]
pub struct FileReport {
    /// Bytes sent, and (verified) received.
    pub bytes: u64,
    /// From connect to the last echoed byte.
    pub elapsed: Duration,
    /// SHA-256 of the stream, hex; compare with `sha256sum FILE`.
    pub sha256: String,
}

impl FileReport {
    /// Bytes per second through the echo (each byte crossed the network twice).
    pub fn bytes_per_s(&self) -> f64 {
        self.bytes as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// `--file`: streams `input` (of any size) to the server while reading the echo, in constant
/// memory, and checks the echo byte for byte. `size`, when known, sizes the progress bar, which is
/// shown only if `progress`.
pub async fn file(
    target: &Target,
    input: impl AsyncRead + Unpin,
    name: &str,
    size: Option<u64>,
    progress: bool,
) -> Result<FileReport, ClientError> {
    let client = Client::connect(target).await?;
    let started = Instant::now();
    let server = client.server;
    let timeout = client.timeout;
    let (blocks_tx, blocks_rx) = mpsc::channel(FILE_WINDOW_BLOCKS);
    let bar = progress.then(|| progress_bar(size));
    let (sent, verified) = match client.stream {
        // Plain TCP splits into two owned halves without a lock between them.
        ClientStream::Tcp(stream) => {
            let (reader, writer) = stream.into_split();
            let send = send_file(input, name, writer, blocks_tx, server);
            let verify = verify_echo(reader, blocks_rx, server, timeout, bar.as_ref());
            tokio::join!(send, verify)
        }
        // One TLS session serves both directions: the halves share it.
        tls @ ClientStream::Tls(_) => {
            let (reader, writer) = tokio::io::split(tls);
            let send = send_file(input, name, writer, blocks_tx, server);
            let verify = verify_echo(reader, blocks_rx, server, timeout, bar.as_ref());
            tokio::join!(send, verify)
        }
    };
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    // The input's own failure explains more than the early close it causes.
    let sent = match sent {
        Err(e @ ClientError::Input { .. }) => return Err(e),
        other => other,
    };
    let (received, sha256) = verified?;
    let sent = sent?;
    if received != sent {
        return Err(ClientError::Closed {
            server,
            offset: received,
            expected: sent,
        });
    }
    Ok(FileReport {
        bytes: sent,
        elapsed: started.elapsed(),
        sha256,
    })
}

async fn send_file(
    mut input: impl AsyncRead + Unpin,
    name: &str,
    mut writer: impl AsyncWrite + Unpin,
    blocks: mpsc::Sender<Vec<u8>>,
    server: SocketAddr,
) -> Result<u64, ClientError> {
    let mut sent = 0u64;
    loop {
        let mut block = vec![0u8; FILE_BLOCK];
        let n = read_full(&mut input, &mut block)
            .await
            .map_err(|source| ClientError::Input {
                name: name.to_owned(),
                source,
            })?;
        if n == 0 {
            break;
        }
        block.truncate(n);
        let written = async {
            writer.write_all(&block).await?;
            // TLS holds the last record until flushed; on TCP this is free.
            writer.flush().await
        };
        written.await.map_err(|source| ClientError::Io {
            server,
            offset: sent,
            source,
        })?;
        sent += n as u64;
        // Waits when the echo lags FILE_WINDOW_BLOCKS behind: this is the client's memory bound.
        if blocks.send(block).await.is_err() {
            // The verifier stopped, and says why.
            break;
        }
    }
    // Half-close (over TLS: close_notify, then the TCP half-close): the server has echoed what
    // it read before it reads the end, echoes the rest, then closes, which ends the verifier.
    let _ = writer.shutdown().await;
    Ok(sent)
}

/// Fills `buf` unless the input ends first; returns how much it read.
async fn read_full(input: &mut (impl AsyncRead + Unpin), buf: &mut [u8]) -> io::Result<usize> {
    let mut have = 0;
    while have < buf.len() {
        match input.read(&mut buf[have..]).await {
            Ok(0) => break,
            Ok(n) => have += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(have)
}

/// Reads the echo and compares it with the blocks the sender queued; returns the byte count and
/// the stream's SHA-256.
async fn verify_echo(
    mut reader: impl AsyncRead + Unpin,
    mut blocks: mpsc::Receiver<Vec<u8>>,
    server: SocketAddr,
    timeout: Duration,
    bar: Option<&ProgressBar>,
) -> Result<(u64, String), ClientError> {
    let mut buf = vec![0u8; FILE_BLOCK];
    let mut hash = Sha256::new();
    let mut offset = 0u64;
    let mut block: Vec<u8> = Vec::new();
    let mut at = 0;
    loop {
        let n = match tokio::time::timeout(timeout, reader.read(&mut buf)).await {
            Ok(Ok(n)) => n,
            Ok(Err(source)) => {
                return Err(ClientError::Io {
                    server,
                    offset,
                    source,
                });
            }
            Err(_) => {
                return Err(ClientError::Timeout {
                    server,
                    offset,
                    timeout,
                });
            }
        };
        if n == 0 {
            // The sender may still have blocks queued: the echo ended before them.
            if at < block.len() || blocks.recv().await.is_some() {
                return Err(ClientError::Closed {
                    server,
                    offset,
                    expected: offset + (block.len() - at) as u64,
                });
            }
            return Ok((offset, hex(&hash.finalize())));
        }
        let mut got = &buf[..n];
        hash.update(got);
        while !got.is_empty() {
            if at == block.len() {
                match blocks.recv().await {
                    Some(next) => {
                        block = next;
                        at = 0;
                    }
                    None => return Err(ClientError::Extra { server, offset }),
                }
            }
            let take = got.len().min(block.len() - at);
            let expected = &block[at..at + take];
            if let Some(i) = first_difference(expected, &got[..take]) {
                return Err(ClientError::Mismatch {
                    server,
                    offset: offset + i as u64,
                    sent: expected[i],
                    got: got[i],
                });
            }
            at += take;
            offset += take as u64;
            got = &got[take..];
        }
        if let Some(bar) = bar {
            bar.set_position(offset);
        }
    }
}

fn progress_bar(size: Option<u64>) -> ProgressBar {
    let (bar, template) = match size {
        Some(len) => (
            ProgressBar::new(len),
            "{bar:30.cyan/blue} {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
        ),
        None => (
            ProgressBar::new_spinner(),
            "{spinner} {bytes} echoed {binary_bytes_per_sec}",
        ),
    };
    bar.set_style(
        ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differences_are_found_at_their_offset() {
        assert_eq!(first_difference(b"abc", b"abc"), None);
        assert_eq!(first_difference(b"abc", b"abd"), Some(2));
        assert_eq!(first_difference(b"", b""), None);
    }

    #[test]
    fn hex_is_lowercase_and_padded() {
        assert_eq!(hex(&[0x00, 0x0f, 0xab]), "000fab");
    }

    #[test]
    fn empty_stream_hash_is_sha256_of_nothing() {
        assert_eq!(
            hex(&Sha256::new().finalize()),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
