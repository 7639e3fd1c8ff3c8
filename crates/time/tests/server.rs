//! The TIME server over real TCP on port 0: every behaviour of docs/time-protocol.md, under each
//! server model, with limits, timeouts and shutdown.

#![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::{PATIENCE, Running, config, start_with};
use jaring_proto::time::{Hms, parse_reply};
use jaring_runtime::{CancellationToken, Model, Server};
use jaring_time::TimeService;
use jiff::tz::TimeZone;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn start(model: Model) -> Running {
    start_with(config(model), TimeZone::UTC).await
}

async fn connect(addr: SocketAddr) -> TcpStream {
    TcpStream::connect(addr).await.expect("connect")
}

/// Reads until the server closes, and returns everything it sent.
async fn read_to_close(stream: &mut TcpStream) -> String {
    let mut all = Vec::new();
    tokio::time::timeout(PATIENCE, stream.read_to_end(&mut all))
        .await
        .expect("server closes the connection")
        .expect("read");
    String::from_utf8(all).expect("replies are UTF-8")
}

/// Reads exactly `n` reply lines (the connection stays open).
async fn read_lines(stream: &mut TcpStream, n: usize) -> Vec<String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while buf.iter().filter(|&&b| b == b'\n').count() < n {
        let got = tokio::time::timeout(PATIENCE, stream.read(&mut chunk))
            .await
            .expect("reply arrives")
            .expect("read");
        assert!(
            got > 0,
            "server closed early; got {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..got]);
    }
    let text = String::from_utf8(buf).expect("UTF-8");
    let lines: Vec<String> = text.split_inclusive("\r\n").map(str::to_owned).collect();
    assert_eq!(lines.len(), n, "exactly {n} lines: {text:?}");
    lines
}

fn assert_jam(line: &str) -> Hms {
    let body = line
        .strip_suffix("\r\n")
        .unwrap_or_else(|| panic!("CR LF ends {line:?}"));
    parse_reply(body.as_bytes()).unwrap_or_else(|e| panic!("{line:?}: {e}"))
}

#[tokio::test]
async fn a_request_split_across_segments_is_answered() {
    let server = start(Model::Async).await;
    let mut s = connect(server.addr).await;
    s.write_all(b"TI").await.unwrap();
    s.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    s.write_all(b"ME\r").await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    s.write_all(b"\n").await.unwrap();
    let lines = read_lines(&mut s, 1).await;
    assert_jam(&lines[0]);
    server.stop().await;
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    let server = start(Model::Async).await;
    let mut s = connect(server.addr).await;
    s.write_all(b"TIME\r\nNOPE\r\nTIME now\r\n\r\nTIME   \r\nTIME\n")
        .await
        .unwrap();
    // The blank line gets no reply: five lines for six requests.
    let lines = read_lines(&mut s, 5).await;
    assert_jam(&lines[0]);
    assert_eq!(
        lines[1],
        "ERR unknown request \"NOPE\"; send TIME or QUIT (upper case)\r\n"
    );
    assert_jam(&lines[2]);
    assert_jam(&lines[3]);
    assert_jam(&lines[4]);
    server.stop().await;
}

#[tokio::test]
async fn quit_closes_the_connection_after_earlier_replies() {
    let server = start(Model::Async).await;
    let mut s = connect(server.addr).await;
    s.write_all(b"TIME\r\nQUIT \r\nTIME\r\n").await.unwrap();
    let all = read_to_close(&mut s).await;
    let lines: Vec<&str> = all.split_inclusive("\r\n").collect();
    assert_eq!(lines.len(), 1, "only the reply before QUIT: {all:?}");
    assert_jam(lines[0]);
    server.stop().await;
}

#[tokio::test]
async fn eof_ends_the_session_after_its_replies() {
    let server = start(Model::Async).await;
    let mut s = connect(server.addr).await;
    s.write_all(b"TIME\r\nTIME").await.unwrap();
    s.shutdown().await.unwrap();
    let all = read_to_close(&mut s).await;
    // The unfinished last line is not a request.
    assert_eq!(all.matches("JAM ").count(), 1, "{all:?}");
    let stats = Arc::clone(&server.stats);
    server.stop().await;
    assert_eq!(stats.closed(), 1, "the server ended the session");
}

#[tokio::test]
async fn non_utf8_gets_err_and_the_connection_stays_usable() {
    let server = start(Model::Async).await;
    let mut s = connect(server.addr).await;
    s.write_all(b"\xc3\x28 TIME\r\nTIME\r\n").await.unwrap();
    let lines = read_lines(&mut s, 2).await;
    assert_eq!(
        lines[0],
        "ERR request is not valid UTF-8; send TIME or QUIT\r\n"
    );
    assert_jam(&lines[1]);
    server.stop().await;
}

#[tokio::test]
async fn an_oversized_line_is_answered_then_closed() {
    let mut c = config(Model::Async);
    c.limits.max_line = 64;
    let server = start_with(c, TimeZone::UTC).await;
    let mut s = connect(server.addr).await;
    s.write_all(b"TIME\r\n").await.unwrap();
    // Far past the cap and never a newline: the server must not wait for one.
    s.write_all(&[b'A'; 10_000]).await.unwrap();
    let all = read_to_close(&mut s).await;
    let lines: Vec<&str> = all.split_inclusive("\r\n").collect();
    assert_eq!(lines.len(), 2, "{all:?}");
    assert_jam(lines[0]);
    assert_eq!(lines[1], "ERR line longer than 64 bytes; closing\r\n");
    server.stop().await;
}

#[tokio::test]
async fn an_idle_connection_is_told_and_closed_while_a_busy_one_stays() {
    let mut c = config(Model::Async);
    c.limits.idle_timeout = Duration::from_secs(1);
    let server = start_with(c, TimeZone::UTC).await;
    let mut idle = connect(server.addr).await;
    let mut busy = connect(server.addr).await;
    // Keep `busy` active past the idle timeout.
    for _ in 0..8 {
        busy.write_all(b"TIME\r\n").await.unwrap();
        assert_jam(&read_lines(&mut busy, 1).await[0]);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let all = read_to_close(&mut idle).await;
    assert_eq!(all, "ERR idle for 1 s; closing\r\n");
    busy.write_all(b"TIME\r\n").await.unwrap();
    assert_jam(&read_lines(&mut busy, 1).await[0]);
    server.stop().await;
}

/// A slowloris: a request line trickled a byte at a time keeps the connection from being idle,
/// but not past the line timeout, under both models that hold connections: the reason, then the
/// close; a well-behaved client is served meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickled_request_line_is_cut_at_the_line_timeout() {
    for model in [Model::Async, Model::Threads] {
        let mut c = config(model);
        c.limits.line_timeout = Duration::from_secs(1);
        c.limits.idle_timeout = Duration::from_secs(60);
        let server = start_with(c, TimeZone::UTC).await;
        let mut slow = connect(server.addr).await;
        for b in b"TIM" {
            slow.write_all(&[*b]).await.unwrap();
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        assert_eq!(
            read_to_close(&mut slow).await,
            "ERR request line not finished within 1 s; closing\r\n",
            "{model}"
        );
        let mut good = connect(server.addr).await;
        good.write_all(b"TIME\r\n").await.unwrap();
        assert_jam(&read_lines(&mut good, 1).await[0]);
        server.stop().await;
    }
}

#[tokio::test]
async fn the_connection_past_the_limit_is_refused_with_a_reason() {
    for model in [Model::Async, Model::Threads] {
        let mut c = config(model);
        c.limits.max_connections = 2;
        let server = start_with(c, TimeZone::UTC).await;
        let mut a = connect(server.addr).await;
        let mut b = connect(server.addr).await;
        // Both admitted and served.
        for s in [&mut a, &mut b] {
            s.write_all(b"TIME\r\n").await.unwrap();
            assert_jam(&read_lines(s, 1).await[0]);
        }
        let mut c3 = connect(server.addr).await;
        assert_eq!(
            read_to_close(&mut c3).await,
            "ERR server busy: 2 connections open; try again later\r\n",
            "{model}"
        );
        assert_eq!(server.stats.refused(), 1);
        // A slot frees when a client leaves, and the next client is served.
        a.write_all(b"QUIT\r\n").await.unwrap();
        read_to_close(&mut a).await;
        let served = tokio::time::timeout(PATIENCE, async {
            loop {
                let mut d = connect(server.addr).await;
                d.write_all(b"TIME\r\nQUIT\r\n").await.unwrap();
                let mut reply = Vec::new();
                let _ = d.read_to_end(&mut reply).await;
                if reply.starts_with(b"JAM ") {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        assert!(served.is_ok(), "{model}: a freed slot is reused");
        drop(b);
        server.stop().await;
    }
}

#[tokio::test]
async fn graceful_shutdown_answers_what_arrived_then_closes_and_stops_accepting() {
    for model in [Model::Async, Model::Threads, Model::Iterative] {
        let server = start(model).await;
        let mut s = connect(server.addr).await;
        s.write_all(b"TIME\r\n").await.unwrap();
        assert_jam(&read_lines(&mut s, 1).await[0]);
        let addr = server.addr;
        server.stop().await;
        let all = read_to_close(&mut s).await;
        assert_eq!(all, "ERR server shutting down; closing\r\n", "{model}");
        assert!(
            TcpStream::connect(addr).await.is_err(),
            "{model}: no one accepts after shutdown"
        );
    }
}

#[tokio::test]
async fn shutdown_with_no_connections_is_immediate() {
    let server = start(Model::Async).await;
    let stats = Arc::clone(&server.stats);
    server.stop().await;
    assert_eq!(stats.active(), 0);
}

#[tokio::test]
async fn tz_sets_the_zone_of_the_reply() {
    let utc = start_with(config(Model::Async), TimeZone::UTC).await;
    let jakarta = start_with(
        config(Model::Async),
        TimeZone::get("Asia/Jakarta").expect("bundled tzdb"),
    )
    .await;
    let ask = |addr| async move {
        let mut s = connect(addr).await;
        s.write_all(b"TIME\r\n").await.unwrap();
        let h = assert_jam(&read_lines(&mut s, 1).await[0]);
        i64::from(h.hour) * 3600 + i64::from(h.minute) * 60 + i64::from(h.second)
    };
    let a = ask(utc.addr).await;
    let b = ask(jakarta.addr).await;
    // Jakarta is UTC+7 all year; allow for the clock ticking between the two requests.
    let diff = (b - a).rem_euclid(86_400);
    assert!(
        (7 * 3600..=7 * 3600 + 5).contains(&diff),
        "UTC {a} s, Jakarta {b} s"
    );
    utc.stop().await;
    jakarta.stop().await;
}

/// Each client sends a request mix whose replies differ, so the order is checked, not just the count.
async fn one_client(addr: SocketAddr, go: Arc<tokio::sync::Barrier>) {
    let mut s = connect(addr).await;
    go.wait().await;
    // `TIME\r\n\r\n` is what a student client sends: its blank line is ignored, never answered.
    s.write_all(b"TIME\r\nWHAT\r\nTIME\r\n\r\nTIME x\r\n   \r\nQUIT\r\n")
        .await
        .unwrap();
    let all = read_to_close(&mut s).await;
    let lines: Vec<&str> = all.split_inclusive("\r\n").collect();
    assert_eq!(lines.len(), 4, "{all:?}");
    assert_jam(lines[0]);
    assert!(
        lines[1].starts_with("ERR unknown request \"WHAT\""),
        "{all:?}"
    );
    assert_jam(lines[2]);
    assert_jam(lines[3]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_clients_at_once_under_every_model() {
    const CLIENTS: usize = 500;
    for model in [Model::Async, Model::Threads, Model::Iterative] {
        let server = start(model).await;
        let go = Arc::new(tokio::sync::Barrier::new(CLIENTS));
        let clients: Vec<_> = (0..CLIENTS)
            .map(|_| tokio::spawn(one_client(server.addr, Arc::clone(&go))))
            .collect();
        for c in clients {
            tokio::time::timeout(PATIENCE * 3, c)
                .await
                .unwrap_or_else(|_| panic!("{model}: clients finish"))
                .unwrap_or_else(|e| panic!("{model}: client failed: {e}"));
        }
        assert_eq!(server.stats.accepted(), CLIENTS as u64, "{model}");
        assert_eq!(server.stats.refused(), 0, "{model}");
        server.stop().await;
    }
}

#[tokio::test]
async fn iterative_serves_one_client_at_a_time() {
    let server = start(Model::Iterative).await;
    let mut first = connect(server.addr).await;
    first.write_all(b"TIME\r\n").await.unwrap();
    assert_jam(&read_lines(&mut first, 1).await[0]);

    // The second client's connect succeeds (the kernel queues it) but nobody reads it yet.
    let mut second = connect(server.addr).await;
    second.write_all(b"TIME\r\n").await.unwrap();
    let mut byte = [0u8; 1];
    let early = tokio::time::timeout(Duration::from_millis(500), second.read(&mut byte)).await;
    assert!(
        early.is_err(),
        "second client answered while the first is connected"
    );

    first.write_all(b"QUIT\r\n").await.unwrap();
    read_to_close(&mut first).await;
    assert_jam(&read_lines(&mut second, 1).await[0]);
    server.stop().await;
}

#[tokio::test]
async fn threads_model_serves_the_same_protocol() {
    let server = start(Model::Threads).await;
    let mut s = connect(server.addr).await;
    s.write_all(b"TI").await.unwrap();
    tokio::time::sleep(Duration::from_millis(30)).await;
    s.write_all(b"ME\r\n\xff\r\nQUIT\r\n").await.unwrap();
    let all = read_to_close(&mut s).await;
    let lines: Vec<&str> = all.split_inclusive("\r\n").collect();
    assert_eq!(lines.len(), 2, "{all:?}");
    assert_jam(lines[0]);
    assert_eq!(
        lines[1],
        "ERR request is not valid UTF-8; send TIME or QUIT\r\n"
    );
    server.stop().await;
}

#[tokio::test]
async fn ipv6_loopback_works() {
    let mut c = config(Model::Async);
    c.listen.bind = "::1".parse().unwrap();
    let Ok(server) = Server::bind(c).await else {
        eprintln!("no IPv6 loopback on this machine; skipping");
        return;
    };
    let addr = server.local_addr();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(server.serve(
        Arc::new(TimeService::new(TimeZone::UTC, 1024)),
        shutdown.clone(),
    ));
    let mut s = connect(addr).await;
    s.write_all(b"TIME\r\n").await.unwrap();
    assert_jam(&read_lines(&mut s, 1).await[0]);
    shutdown.cancel();
    task.await.unwrap();
}

/// The server's counters (what `/metrics` and the lab's dashboard show) count every answered
/// request, every refused one and the bytes, under both connection models.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_counters_count_requests_errors_and_bytes_under_every_model() {
    for model in [Model::Async, Model::Threads] {
        let server = start(model).await;
        let mut s = connect(server.addr).await;
        let sent = b"TIME\r\nNOPE\r\nTIME\r\n\r\nTIME\r\n";
        s.write_all(sent).await.unwrap();
        let lines = read_lines(&mut s, 4).await;
        let got: usize = lines.iter().map(String::len).sum();
        // Counted just after the replies are written: wait for it rather than race it.
        let deadline = tokio::time::Instant::now() + PATIENCE;
        let snap = loop {
            let snap = server.stats.snapshot();
            if snap.requests == 3 || tokio::time::Instant::now() > deadline {
                break snap;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        assert_eq!((snap.requests, snap.errors), (3, 1), "{model:?}: {snap:?}");
        assert_eq!(snap.bytes_in, sent.len() as u64, "{model:?}");
        assert_eq!(snap.bytes_out, got as u64, "{model:?}");
        assert_eq!(snap.open, 1, "{model:?}");
        server.stop().await;
    }
}
