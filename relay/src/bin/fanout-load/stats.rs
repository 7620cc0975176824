//! What the load client counts: a latency histogram, per-subscriber sequence tracking
//! (lost, duplicated, out of order) and the CPU time of watched processes.

use std::time::Duration;

/// Histogram resolution.
const BUCKET_NS: u64 = 10_000;
/// Buckets: 10 µs each up to 20 s; slower deliveries land in the last one.
const BUCKETS: usize = 2_000_000;

/// Publish-to-receive latencies in 10-µs buckets: fixed memory whatever the delivery count
/// (a million deliveries a second for minutes would not fit as a list).
pub struct Histogram {
    counts: Vec<u32>,
    total: u64,
    max_ns: u64,
}

impl Histogram {
    pub fn new() -> Histogram {
        Histogram {
            counts: vec![0; BUCKETS],
            total: 0,
            max_ns: 0,
        }
    }

    pub fn record(&mut self, ns: u64) {
        let bucket = usize::try_from(ns / BUCKET_NS)
            .unwrap_or(BUCKETS - 1)
            .min(BUCKETS - 1);
        self.counts[bucket] = self.counts[bucket].saturating_add(1);
        self.total += 1;
        self.max_ns = self.max_ns.max(ns);
    }

    pub fn max(&self) -> Duration {
        Duration::from_nanos(self.max_ns)
    }

    /// The latency below which `q` (0..=1) of the samples fall (upper bucket edge).
    pub fn quantile(&self, q: f64) -> Duration {
        if self.total == 0 {
            return Duration::ZERO;
        }
        let want = ((self.total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0u64;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += u64::from(c);
            if seen >= want {
                return Duration::from_nanos(((i as u64 + 1) * BUCKET_NS).min(self.max_ns));
            }
        }
        self.max()
    }
}

/// Which measured events (numbered 1..=total) one subscriber has received.
pub struct Sequence {
    seen: Vec<u64>,
    total: u64,
    highest: u64,
    pub distinct: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
}

impl Sequence {
    pub fn new(total: u64) -> Sequence {
        Sequence {
            seen: vec![0; usize::try_from(total / 64 + 1).unwrap_or(1)],
            total,
            highest: 0,
            distinct: 0,
            duplicates: 0,
            out_of_order: 0,
        }
    }

    /// Measured events expected.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Notes event `n`; false when it is outside 1..=total (not ours to count).
    pub fn note(&mut self, n: u64) -> bool {
        if n == 0 || n > self.total {
            return false;
        }
        let (word, bit) = (usize::try_from(n / 64).unwrap_or(usize::MAX), n % 64);
        let Some(w) = self.seen.get_mut(word) else {
            return false;
        };
        if *w & (1 << bit) != 0 {
            self.duplicates += 1;
            return true;
        }
        *w |= 1 << bit;
        self.distinct += 1;
        if n < self.highest {
            self.out_of_order += 1;
        }
        self.highest = self.highest.max(n);
        true
    }
}

/// User + system CPU time of a process so far, from /proc/PID/stat; `None` once it is gone.
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; fields after its closing parenthesis
    // start at field 3, so utime and stime (14 and 15) are the 12th and 13th there.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    let ticks = clock_ticks();
    Some(Duration::from_secs_f64(
        (utime + stime) as f64 / ticks as f64,
    ))
}

fn clock_ticks() -> u64 {
    // SAFETY: sysconf only reads a configuration value.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(ticks).ok().filter(|&t| t > 0).unwrap_or(100)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_and_sequences() {
        let mut h = Histogram::new();
        // 5, 15, ... 995 µs: quantiles are the upper edge of the 10-µs bucket they fall in.
        for k in 0..100u64 {
            h.record(k * 10_000 + 5_000);
        }
        assert_eq!(h.quantile(0.5), Duration::from_micros(500));
        assert_eq!(h.quantile(0.99), Duration::from_micros(990));
        assert_eq!(
            h.quantile(1.0),
            Duration::from_micros(995),
            "capped at the max"
        );
        assert_eq!(h.max(), Duration::from_micros(995));

        let mut s = Sequence::new(10);
        for n in [1, 2, 4, 3, 3, 11, 0] {
            s.note(n);
        }
        assert_eq!((s.distinct, s.duplicates, s.out_of_order), (4, 1, 1));
        assert!(!s.note(200));
    }
}
