//! `jaring info`: what the system says about sockets, as the lab's `socket_info` prints it.
//!
//! Everything here is read from the system, nothing is assumed: the timeout of a fresh socket and
//! the value read back after setting one, every `getaddrinfo(3)` result for a host and port (family,
//! socket type, protocol, canonical name, address), the local host name, and the options a new
//! TCP socket starts with. [`gather`] blocks (name resolution can take seconds), so async callers
//! run it on a blocking thread.
//!
//! Why `dns-lookup` for the resolver: the standard library's `ToSocketAddrs` and tokio's
//! `lookup_host` return only addresses (no socket type, protocol or canonical name) and socket2 has
//! no resolver; `dns-lookup` wraps `getaddrinfo(3)` and `gethostname(2)` safely and returns every
//! field, so this crate needs no unsafe code.
//!
//! # Layout
//! - [`SocketInfo`] and its parts: the facts, serializable as the stable `--json` schema.
//! - [`gather`]: collects them.
//! - [`render`]: the tables people read.

#![forbid(unsafe_code)]

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use comfy_table::Table;
use comfy_table::presets::UTF8_BORDERS_ONLY;
use dns_lookup::{AddrFamily, AddrInfoHints, Protocol as Proto, SockType};
use serde::Serialize;
use socket2::{Domain, Protocol, Socket, Type};

/// Default host, as the lab's `socket_info`.
pub const DEFAULT_HOST: &str = "localhost";

/// Default port (or service name).
pub const DEFAULT_PORT: &str = "80";

/// Timeout set on a fresh socket to show it taking effect, unless the caller asks for another.
pub const DEFAULT_SET_TIMEOUT: Duration = Duration::from_secs(10);

/// `AI_CANONNAME`: ask getaddrinfo for the host's canonical name. The value is 2 on Linux, the
/// BSDs and macOS alike.
const AI_CANONNAME: i32 = 2;

/// Everything `jaring info` reports. Its JSON form is a stable schema for scripts.
#[derive(Debug, Clone, Serialize)]
pub struct SocketInfo {
    /// The host looked up, as given.
    pub host: String,
    /// The port or service looked up, as given.
    pub port: String,
    /// A fresh socket's timeout, before and after setting one.
    pub timeout: TimeoutInfo,
    /// Every getaddrinfo result, in the order the system gave them.
    pub addresses: Vec<AddrEntry>,
    /// This machine's host name.
    pub hostname: String,
    /// The options a new IPv4 TCP socket starts with.
    pub tcp_defaults: TcpDefaults,
}

/// A fresh socket's receive timeout, in seconds (`null`: none, reads wait for ever).
#[derive(Debug, Clone, Serialize)]
pub struct TimeoutInfo {
    /// What a new socket has.
    pub default_s: Option<f64>,
    /// What was set.
    pub set_s: f64,
    /// What the socket reports afterwards (the kernel may round it).
    pub after_set_s: Option<f64>,
}

/// One getaddrinfo result.
#[derive(Debug, Clone, Serialize)]
pub struct AddrEntry {
    /// `AF_INET`, `AF_INET6`, or the number the system gave.
    pub family: String,
    /// `SOCK_STREAM`, `SOCK_DGRAM`, `SOCK_RAW`, or a number.
    pub socktype: String,
    /// `IPPROTO_TCP`, `IPPROTO_UDP`, `IPPROTO_IP` (0), or a number.
    pub protocol: String,
    /// The canonical name; the system gives it with the first result only.
    pub canonname: Option<String>,
    /// The address, without the port.
    pub address: String,
    /// The port.
    pub port: u16,
}

/// Options of a new TCP socket, read back with getsockopt.
#[derive(Debug, Clone, Serialize)]
pub struct TcpDefaults {
    /// `SO_RCVBUF`, bytes.
    pub so_rcvbuf: usize,
    /// `SO_SNDBUF`, bytes.
    pub so_sndbuf: usize,
    /// `TCP_NODELAY`.
    pub tcp_nodelay: bool,
    /// `SO_KEEPALIVE`.
    pub so_keepalive: bool,
    /// `SO_REUSEADDR`.
    pub so_reuseaddr: bool,
}

/// Why `jaring info` could not say everything.
#[derive(Debug, thiserror::Error)]
pub enum InfoError {
    /// The name (or service) does not resolve.
    #[error(
        "cannot resolve {host}:{port}: {reason}; check the spelling, or give an address such as 127.0.0.1 or ::1"
    )]
    Resolve {
        /// Host as given.
        host: String,
        /// Port or service as given.
        port: String,
        /// What the resolver said.
        reason: String,
    },
    /// The system would not create a socket to read defaults from.
    #[error("cannot create a TCP socket to read its defaults")]
    Socket(#[source] io::Error),
    /// The system would not say its host name.
    #[error("cannot read this machine's host name")]
    Hostname(#[source] io::Error),
}

/// Collects everything about `host`:`port`, setting `timeout` on a fresh socket. Blocks.
pub fn gather(host: &str, port: &str, timeout: Duration) -> Result<SocketInfo, InfoError> {
    Ok(SocketInfo {
        host: host.to_owned(),
        port: port.to_owned(),
        timeout: timeouts(timeout)?,
        addresses: resolve(host, port)?,
        hostname: dns_lookup::get_hostname().map_err(InfoError::Hostname)?,
        tcp_defaults: tcp_defaults()?,
    })
}

fn tcp_socket() -> Result<Socket, InfoError> {
    Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).map_err(InfoError::Socket)
}

fn timeouts(set: Duration) -> Result<TimeoutInfo, InfoError> {
    let socket = tcp_socket()?;
    let default = socket.read_timeout().map_err(InfoError::Socket)?;
    // A zero timeout means "none" to the kernel, so it cannot show a value taking effect.
    let set = set.max(Duration::from_micros(1));
    socket
        .set_read_timeout(Some(set))
        .map_err(InfoError::Socket)?;
    let after = socket.read_timeout().map_err(InfoError::Socket)?;
    Ok(TimeoutInfo {
        default_s: default.map(|d| d.as_secs_f64()),
        set_s: set.as_secs_f64(),
        after_set_s: after.map(|d| d.as_secs_f64()),
    })
}

fn resolve(host: &str, port: &str) -> Result<Vec<AddrEntry>, InfoError> {
    let failed = |reason: String| InfoError::Resolve {
        host: host.to_owned(),
        port: port.to_owned(),
        reason,
    };
    // getaddrinfo takes a number past 65535 and wraps it (99999 becomes 34463).
    if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) && port.parse::<u16>().is_err()
    {
        return Err(failed(
            "a port number is 0 to 65535 (or give a service name such as http)".into(),
        ));
    }
    let hints = AddrInfoHints {
        flags: AI_CANONNAME,
        ..AddrInfoHints::default()
    };
    let results = dns_lookup::getaddrinfo(Some(host), Some(port), Some(hints))
        .map_err(|e| failed(resolver_reason(e)))?;
    let mut entries = Vec::new();
    for result in results {
        let ai = result.map_err(|e| failed(e.to_string()))?;
        entries.push(AddrEntry {
            family: family_name(ai.address),
            socktype: socktype_name(ai.socktype),
            protocol: protocol_name(ai.protocol),
            canonname: ai.canonname,
            address: ai.sockaddr.ip().to_string(),
            port: ai.sockaddr.port(),
        });
    }
    if entries.is_empty() {
        return Err(failed("no addresses".to_owned()));
    }
    Ok(entries)
}

/// The resolver's own words, without the wrapper's prefix.
fn resolver_reason(e: dns_lookup::LookupError) -> String {
    let text = io::Error::from(e).to_string();
    text.strip_prefix("failed to lookup address information: ")
        .unwrap_or(&text)
        .to_owned()
}

fn family_name(family: i32) -> String {
    if AddrFamily::Inet == family {
        "AF_INET".into()
    } else if AddrFamily::Inet6 == family {
        "AF_INET6".into()
    } else {
        family.to_string()
    }
}

fn socktype_name(socktype: i32) -> String {
    if SockType::Stream == socktype {
        "SOCK_STREAM".into()
    } else if SockType::DGram == socktype {
        "SOCK_DGRAM".into()
    } else if SockType::Raw == socktype {
        "SOCK_RAW".into()
    } else {
        socktype.to_string()
    }
}

fn protocol_name(protocol: i32) -> String {
    if Proto::TCP == protocol {
        "IPPROTO_TCP".into()
    } else if Proto::UDP == protocol {
        "IPPROTO_UDP".into()
    } else if protocol == 0 {
        "IPPROTO_IP".into()
    } else {
        protocol.to_string()
    }
}

fn tcp_defaults() -> Result<TcpDefaults, InfoError> {
    let socket = tcp_socket()?;
    Ok(TcpDefaults {
        so_rcvbuf: socket.recv_buffer_size().map_err(InfoError::Socket)?,
        so_sndbuf: socket.send_buffer_size().map_err(InfoError::Socket)?,
        tcp_nodelay: socket.tcp_nodelay().map_err(InfoError::Socket)?,
        so_keepalive: socket.keepalive().map_err(InfoError::Socket)?,
        so_reuseaddr: socket.reuse_address().map_err(InfoError::Socket)?,
    })
}

/// The report as tables for people: one per section.
pub fn render(info: &SocketInfo) -> String {
    let secs = |s: Option<f64>| {
        s.map_or_else(|| "none (blocks for ever)".to_owned(), |s| format!("{s} s"))
    };
    let mut out = String::new();

    let mut timeout = table(["socket timeout", "value"]);
    timeout.add_row([
        "new socket (SO_RCVTIMEO)".to_owned(),
        secs(info.timeout.default_s),
    ]);
    timeout.add_row([
        format!("after setting {} s", info.timeout.set_s),
        secs(info.timeout.after_set_s),
    ]);
    out.push_str(&format!("{timeout}\n\n"));

    out.push_str(&format!("getaddrinfo({:?}, {:?}):\n", info.host, info.port));
    let mut addrs = table(["family", "type", "protocol", "canonical name", "address"]);
    for a in &info.addresses {
        let addr = match a.address.parse::<std::net::IpAddr>() {
            Ok(ip) => SocketAddr::new(ip, a.port).to_string(),
            Err(_) => format!("{}:{}", a.address, a.port),
        };
        addrs.add_row([
            a.family.clone(),
            a.socktype.clone(),
            a.protocol.clone(),
            a.canonname.clone().unwrap_or_default(),
            addr,
        ]);
    }
    out.push_str(&format!("{addrs}\n\n"));

    let mut host = table(["this machine", "value"]);
    host.add_row(["host name", info.hostname.as_str()]);
    out.push_str(&format!("{host}\n\n"));

    let d = &info.tcp_defaults;
    let mut opts = table(["new TCP socket option", "default"]);
    opts.add_row(["SO_RCVBUF".to_owned(), format!("{} bytes", d.so_rcvbuf)]);
    opts.add_row(["SO_SNDBUF".to_owned(), format!("{} bytes", d.so_sndbuf)]);
    opts.add_row(["TCP_NODELAY".to_owned(), on_off(d.tcp_nodelay)]);
    opts.add_row(["SO_KEEPALIVE".to_owned(), on_off(d.so_keepalive)]);
    opts.add_row(["SO_REUSEADDR".to_owned(), on_off(d.so_reuseaddr)]);
    out.push_str(&format!("{opts}\n"));
    out
}

fn table<const N: usize>(header: [&str; N]) -> Table {
    let mut t = Table::new();
    t.load_style(UTF8_BORDERS_ONLY);
    t.set_header(header);
    t
}

fn on_off(v: bool) -> String {
    if v { "on" } else { "off" }.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_c_constants() {
        assert_eq!(socktype_name(1), "SOCK_STREAM");
        assert_eq!(protocol_name(0), "IPPROTO_IP");
        assert_eq!(protocol_name(6), "IPPROTO_TCP");
        assert_eq!(family_name(-7), "-7");
    }

    #[test]
    fn a_fresh_socket_has_no_timeout_until_one_is_set() {
        let t = timeouts(Duration::from_secs(3)).expect("sockets");
        assert_eq!(t.default_s, None);
        assert_eq!(t.after_set_s, Some(3.0));
    }
}
