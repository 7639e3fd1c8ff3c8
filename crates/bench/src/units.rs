//! Numbers as people read them: thousands separated, durations and sizes in the unit that fits.

/// `1234567` as `1,234,567`.
pub fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A rate, rounded to a whole number, separated: `123,457`.
pub fn rate(per_s: f64) -> String {
    count(per_s.round().max(0.0) as u64)
}

/// Microseconds in the unit that keeps three significant figures: `850 µs`, `12.5 ms`, `1.23 s`.
pub fn micros(us: u64) -> String {
    let us = us as f64;
    if us < 1_000.0 {
        format!("{us:.0} µs")
    } else if us < 1_000_000.0 {
        three_figures(us / 1_000.0, "ms")
    } else {
        three_figures(us / 1_000_000.0, "s")
    }
}

/// A round bound of microseconds (1, 2, 5, 10 … as a histogram's buckets have): `500 µs`,
/// `20 ms`, `1 s`; a bound that is not round keeps its fraction.
pub fn bound(us: u64) -> String {
    match us {
        0..1_000 => format!("{us} µs"),
        1_000..1_000_000 if us.is_multiple_of(1_000) => format!("{} ms", us / 1_000),
        1_000_000.. if us.is_multiple_of(1_000_000) => format!("{} s", us / 1_000_000),
        _ => micros(us),
    }
}

/// Bytes in binary units: `512 B`, `1.5 KiB`, `8.40 GiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    three_figures(v, UNITS[unit])
}

fn three_figures(v: f64, unit: &str) -> String {
    if v < 10.0 {
        format!("{v:.2} {unit}")
    } else if v < 100.0 {
        format!("{v:.1} {unit}")
    } else {
        format!("{v:.0} {unit}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_as_people_write_them() {
        assert_eq!(count(0), "0");
        assert_eq!(count(999), "999");
        assert_eq!(count(1_000), "1,000");
        assert_eq!(count(9_032_663_040), "9,032,663,040");
        assert_eq!(rate(122_508.9), "122,509");
        assert_eq!(micros(1), "1 µs");
        assert_eq!(micros(999), "999 µs");
        assert_eq!(micros(1_234), "1.23 ms");
        assert_eq!(micros(12_500), "12.5 ms");
        assert_eq!(micros(126_911), "127 ms");
        assert_eq!(micros(2_500_000), "2.50 s");
        assert_eq!(bound(500), "500 µs");
        assert_eq!(bound(20_000), "20 ms");
        assert_eq!(bound(1_000_000), "1 s");
        assert_eq!(bound(1_500), "1.50 ms");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1_536), "1.50 KiB");
        assert_eq!(bytes(9_032_663_040), "8.41 GiB");
    }
}
