//! The TIME server side: the runtime [`Service`] and the clock it answers with.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jaring_proto::Flow;
use jaring_proto::time::{Clock, Hms, TimeSession, encode_error};
use jaring_runtime::{ConnInfo, Service, Session};
use jiff::Timestamp;
use jiff::tz::TimeZone;

/// The port the labs' time server listens on.
pub const DEFAULT_PORT: u16 = 45000;

/// The system clock read in one time zone, converted at most once per second.
///
/// Zone conversion is a search through the zone's transitions; a busy connection asks many times a
/// second, so the last answer is kept until the second changes.
#[derive(Debug, Clone)]
pub struct ZonedClock {
    tz: TimeZone,
    cached: Option<(u64, Hms)>,
}

impl ZonedClock {
    /// A clock in `tz`.
    pub fn new(tz: TimeZone) -> Self {
        Self { tz, cached: None }
    }

    /// The time of day in this clock's zone at `unix_seconds`.
    pub fn at(&self, unix_seconds: i64) -> Hms {
        let offset = Timestamp::from_second(unix_seconds)
            .map(|ts| self.tz.to_offset(ts).seconds())
            .unwrap_or(0);
        let local = unix_seconds + i64::from(offset);
        Hms::from_seconds_of_day(local.rem_euclid(86_400) as u32)
    }
}

impl Clock for ZonedClock {
    fn now(&mut self) -> Hms {
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_secs();
        match self.cached {
            Some((at, hms)) if at == secs => hms,
            _ => {
                let hms = self.at(secs as i64);
                self.cached = Some((secs, hms));
                hms
            }
        }
    }
}

/// The TIME service, served by [`jaring_runtime::Server`].
#[derive(Debug, Clone)]
pub struct TimeService {
    tz: TimeZone,
    max_line: usize,
}

impl TimeService {
    /// Answers in `tz` and refuses request lines longer than `max_line` bytes.
    pub fn new(tz: TimeZone, max_line: usize) -> Self {
        Self { tz, max_line }
    }
}

/// One TIME connection: the protocol state plus its clock.
#[derive(Debug)]
pub struct TimeConnection {
    proto: TimeSession,
    clock: ZonedClock,
}

impl Session for TimeConnection {
    fn handle_input(&mut self, input: &[u8], out: &mut Vec<u8>) -> Flow {
        self.proto.handle_input(input, &mut self.clock, out)
    }

    fn handle_eof(&mut self, _out: &mut Vec<u8>) {
        self.proto.handle_eof();
    }

    fn handle_idle_timeout(&mut self, idle: Duration, out: &mut Vec<u8>) {
        self.proto.handle_idle_timeout(idle.as_secs(), out);
    }

    fn handle_shutdown(&mut self, out: &mut Vec<u8>) {
        self.proto.handle_shutdown(out);
    }

    fn partial(&self) -> bool {
        self.proto.partial()
    }

    fn answered(&self) -> u64 {
        self.proto.answered()
    }

    fn refused(&self) -> u64 {
        self.proto.refused()
    }

    fn handle_slow_request(&mut self, limit: Duration, out: &mut Vec<u8>) {
        self.proto.handle_slow_request(limit.as_secs(), out);
    }
}

impl Service for TimeService {
    type Session = TimeConnection;

    fn name(&self) -> &'static str {
        "time"
    }

    fn session(&self, _conn: &ConnInfo) -> TimeConnection {
        TimeConnection {
            proto: TimeSession::new(self.max_line),
            clock: ZonedClock::new(self.tz.clone()),
        }
    }

    fn busy_reply(&self, why: jaring_runtime::Busy) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        encode_error(why, &mut out);
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zones_shift_the_hour() {
        // 2026-01-01T00:00:00Z
        let t = 1_767_225_600;
        let utc = ZonedClock::new(TimeZone::UTC).at(t);
        let jakarta = ZonedClock::new(TimeZone::get("Asia/Jakarta").expect("bundled tzdb")).at(t);
        assert_eq!(utc.to_string(), "00:00:00");
        assert_eq!(jakarta.to_string(), "07:00:00");
        let ny = ZonedClock::new(TimeZone::get("America/New_York").expect("bundled tzdb")).at(t);
        assert_eq!(ny.to_string(), "19:00:00");
    }
}
