//! The lab's DNS server on mesin-1 (with `--hosts`): the lab's names (`mesin-1.lab` …) over UDP
//! port 53, so `getaddrinfo` on mesin-2 and mesin-3 sends DNS packets the capture shows. The
//! protocol is `jaring_proto::dns`; this is its socket.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use jaring_proto::dns::{MAX_QUERY, Zone, answer};
use jaring_runtime::CancellationToken;
use tokio::net::UdpSocket;

/// The lab's zone: every host as `HOST.lab`.
pub const ZONE: &str = "lab";

/// The DNS port.
pub const PORT: u16 = 53;

/// The zone of the lab's hosts.
pub fn zone() -> Zone {
    Zone {
        origin: ZONE.into(),
        hosts: super::net::HOSTS
            .iter()
            .map(|(h, a)| ((*h).to_owned(), *a))
            .collect(),
    }
}

/// Binds the DNS port on every address of this host.
pub async fn bind() -> std::io::Result<UdpSocket> {
    UdpSocket::bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, PORT))).await
}

/// Answers queries until `shutdown`. One reply per query, as big as the query plus one record:
/// nothing a sender does costs more than that.
pub async fn serve(socket: UdpSocket, shutdown: CancellationToken) {
    let socket = Arc::new(socket);
    let zone = zone();
    // One byte more than the limit, so an oversized datagram is seen as such and dropped.
    let mut buf = vec![0u8; MAX_QUERY + 1];
    loop {
        let (n, from) = tokio::select! {
            () = shutdown.cancelled() => return,
            got = socket.recv_from(&mut buf) => match got {
                Ok(got) => got,
                // An ICMP error for an earlier reply (the asker went away): go on.
                Err(_) => continue,
            },
        };
        if let Some(reply) = answer(&buf[..n], &zone) {
            let _ = socket.send_to(&reply, from).await;
        }
    }
}
