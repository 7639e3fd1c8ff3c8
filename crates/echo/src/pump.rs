//! Where a connection's bytes wait between being read and being written back: a user-space buffer
//! (portable, and what every connection starts with) or a kernel pipe fed and drained by
//! `splice(2)`, so a stream's bytes are never copied into the process (Linux).
//!
//! Both work on a non-blocking tokio socket without awaiting: the connection loop calls
//! [`Pump::fill`] and [`Pump::drain`] and waits for readiness only after one says
//! [`Fill::Blocked`] or [`Drain::Blocked`], which is when tokio has cleared that readiness.

use std::io;

use tokio::net::TcpStream;

/// What a fill did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fill {
    /// Took this many bytes from the socket.
    Got(usize),
    /// The peer closed its sending side.
    Eof,
    /// The socket has nothing to read now; wait until it is readable.
    Blocked,
    /// No room left (a pipe can be out of slots before it is out of bytes); drain first.
    Full,
    /// The socket has data, but an empty pipe would not take it (splice refused for a reason
    /// of the kernel's). The caller should stop splicing this connection and copy instead, so
    /// the connection can neither stall nor spin.
    Stuck,
}

/// What a drain did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drain {
    /// Wrote this many bytes to the socket.
    Sent(usize),
    /// The socket's send buffer is full; wait until it is writable.
    Blocked,
}

/// A connection's holding space.
#[derive(Debug)]
pub enum Pump {
    /// Bytes copied through a buffer of ours.
    Buffer(BufferPump),
    /// Bytes moved through a kernel pipe, never copied into the process.
    #[cfg(target_os = "linux")]
    Pipe(pipe::PipePump),
}

impl Pump {
    /// A copying pump holding up to `capacity` bytes.
    pub fn buffer(capacity: usize) -> Self {
        Self::Buffer(BufferPump {
            buf: vec![0; capacity].into_boxed_slice(),
            start: 0,
            end: 0,
        })
    }

    /// A zero-copy pump whose pipe holds about `capacity` bytes (the kernel rounds it to pages,
    /// and may grant less: then it keeps its default size).
    #[cfg(target_os = "linux")]
    pub fn pipe(capacity: usize) -> io::Result<Self> {
        pipe::PipePump::new(capacity).map(Self::Pipe)
    }

    /// Zero copy needs Linux; elsewhere the caller falls back to a buffer.
    #[cfg(not(target_os = "linux"))]
    pub fn pipe(_capacity: usize) -> io::Result<Self> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "splice(2) is Linux-only",
        ))
    }

    /// Most bytes this pump holds.
    pub fn capacity(&self) -> usize {
        match self {
            Self::Buffer(b) => b.buf.len(),
            #[cfg(target_os = "linux")]
            Self::Pipe(p) => p.capacity,
        }
    }

    /// Bytes read and not yet written back.
    pub fn pending(&self) -> usize {
        match self {
            Self::Buffer(b) => b.end - b.start,
            #[cfg(target_os = "linux")]
            Self::Pipe(p) => p.pending,
        }
    }

    /// Whether a read could take anything now.
    pub fn has_room(&self) -> bool {
        match self {
            Self::Buffer(b) => b.end < b.buf.len(),
            #[cfg(target_os = "linux")]
            Self::Pipe(p) => p.pending < p.capacity,
        }
    }

    /// Reads what the socket has, up to the room left, without waiting.
    pub fn fill(&mut self, stream: &TcpStream) -> io::Result<Fill> {
        match self {
            Self::Buffer(b) => b.fill(stream),
            #[cfg(target_os = "linux")]
            Self::Pipe(p) => p.fill(stream),
        }
    }

    /// Writes what is pending, as much as the socket takes, without waiting.
    pub fn drain(&mut self, stream: &TcpStream) -> io::Result<Drain> {
        match self {
            Self::Buffer(b) => b.drain(stream),
            #[cfg(target_os = "linux")]
            Self::Pipe(p) => p.drain(stream),
        }
    }
}

/// The portable pump: `buf[start..end]` is read and not yet written.
#[derive(Debug)]
pub struct BufferPump {
    buf: Box<[u8]>,
    start: usize,
    end: usize,
}

impl BufferPump {
    fn fill(&mut self, stream: &TcpStream) -> io::Result<Fill> {
        match stream.try_read(&mut self.buf[self.end..]) {
            Ok(0) => Ok(Fill::Eof),
            Ok(n) => {
                self.end += n;
                Ok(Fill::Got(n))
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(Fill::Blocked),
            // A signal cut the call short: report no progress so the caller simply tries again.
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(Fill::Got(0)),
            Err(e) => Err(e),
        }
    }

    fn drain(&mut self, stream: &TcpStream) -> io::Result<Drain> {
        match stream.try_write(&self.buf[self.start..self.end]) {
            Ok(n) => {
                self.start += n;
                if self.start == self.end {
                    // Empty: start over at the front so the next read gets the whole buffer.
                    self.start = 0;
                    self.end = 0;
                }
                Ok(Drain::Sent(n))
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(Drain::Blocked),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(Drain::Sent(0)),
            Err(e) => Err(e),
        }
    }
}

#[cfg(target_os = "linux")]
mod pipe {
    //! The splice pump. Bytes go socket → pipe → socket as page references: the process never
    //! touches them, which saves the two copies a read/write loop pays.

    use std::io;
    use std::os::fd::OwnedFd;

    use rustix::io::Errno;
    use rustix::net::RecvFlags;
    use rustix::pipe::{PipeFlags, SpliceFlags, fcntl_getpipe_size, fcntl_setpipe_size};
    use tokio::io::Interest;
    use tokio::net::TcpStream;

    use super::{Drain, Fill};

    /// Splices tried again after a refusal while the peek saw data: enough to outlast the race
    /// with arriving data, few enough that a real refusal soon falls back to copying.
    const SPLICE_RETRIES: usize = 2;

    /// A pipe and what is in it.
    #[derive(Debug)]
    pub struct PipePump {
        read_end: OwnedFd,
        write_end: OwnedFd,
        pub(super) capacity: usize,
        pub(super) pending: usize,
    }

    impl PipePump {
        pub(super) fn new(capacity: usize) -> io::Result<Self> {
            let (read_end, write_end) =
                rustix::pipe::pipe_with(PipeFlags::CLOEXEC | PipeFlags::NONBLOCK)?;
            // Refused past the system's per-user pipe budget: keep the default size then.
            let capacity = match fcntl_setpipe_size(&write_end, capacity) {
                Ok(granted) => granted,
                Err(_) => fcntl_getpipe_size(&write_end)?,
            };
            Ok(Self {
                read_end,
                write_end,
                capacity,
                pending: 0,
            })
        }

        pub(super) fn fill(&mut self, stream: &TcpStream) -> io::Result<Fill> {
            let room = self.capacity - self.pending;
            let pending = self.pending;
            let write_end = &self.write_end;
            // EAGAIN should mean "socket empty", but with bytes in the pipe it may mean "pipe out
            // of slots", and the kernel may refuse for its own reasons too. A one-byte peek tells
            // them apart: only an empty socket may clear tokio's read readiness (else we would
            // wait for data that is already there); data that is there is returned as a value,
            // which try_io passes through untouched: Full (drain first) if the pipe holds
            // bytes, Stuck if it is empty.
            //
            // Data found by the peek has usually just arrived, after the splice looked: on a busy
            // stream that race is the common case, not a refusal, so the splice is tried again
            // before the peek's answer counts. Without the retries most streams were declared
            // Stuck within milliseconds and copied for the rest of their life.
            let result = stream.try_io(Interest::READABLE, || {
                for _ in 0..=SPLICE_RETRIES {
                    match rustix::pipe::splice(
                        stream,
                        None,
                        write_end,
                        None,
                        room,
                        SpliceFlags::MOVE | SpliceFlags::NONBLOCK,
                    ) {
                        Ok(n) => return Ok(Some(n)),
                        Err(Errno::AGAIN) => {
                            let mut probe = [0u8; 1];
                            rustix::net::recv(
                                stream,
                                &mut probe,
                                RecvFlags::PEEK | RecvFlags::DONTWAIT,
                            )?;
                        }
                        Err(e) => return Err(io::Error::from(e)),
                    }
                }
                Ok(None)
            });
            match result {
                Ok(Some(0)) => Ok(Fill::Eof),
                Ok(Some(n)) => {
                    self.pending += n;
                    Ok(Fill::Got(n))
                }
                Ok(None) if pending > 0 => Ok(Fill::Full),
                Ok(None) => Ok(Fill::Stuck),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(Fill::Blocked),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(Fill::Got(0)),
                Err(e) => Err(e),
            }
        }

        pub(super) fn drain(&mut self, stream: &TcpStream) -> io::Result<Drain> {
            let pending = self.pending;
            let read_end = &self.read_end;
            // The pipe holds `pending` bytes, so EAGAIN here can only be the socket's.
            let result = stream.try_io(Interest::WRITABLE, || {
                rustix::pipe::splice(
                    read_end,
                    None,
                    stream,
                    None,
                    pending,
                    SpliceFlags::MOVE | SpliceFlags::NONBLOCK,
                )
                .map_err(io::Error::from)
            });
            match result {
                Ok(n) => {
                    self.pending -= n;
                    Ok(Drain::Sent(n))
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(Drain::Blocked),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(Drain::Sent(0)),
                Err(e) => Err(e),
            }
        }
    }
}
