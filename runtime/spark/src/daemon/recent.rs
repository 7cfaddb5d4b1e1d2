//! The last minute of admissions: how many requests came in, and how many found every
//! inference slot busy and waited in the queue. `metrics summary` shows it, because the
//! cumulative latency histogram cannot say whether requests are slow *now*, nor why.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How far back the summary looks.
pub const WINDOW: Duration = Duration::from_secs(60);
/// Entries kept at most: beyond this rate (about 1,000 requests a second) the oldest go and
/// the counts are a lower bound.
const MAX_ENTRIES: usize = 65_536;

#[derive(Default)]
pub struct RecentAdmissions(Mutex<VecDeque<(Instant, bool)>>);

impl RecentAdmissions {
    /// One admitted request; `waited`: every slot was busy when it came.
    pub fn record(&self, waited: bool) {
        self.record_at(Instant::now(), waited);
    }

    fn record_at(&self, now: Instant, waited: bool) {
        let mut q = self.0.lock().unwrap();
        prune(&mut q, now);
        if q.len() == MAX_ENTRIES {
            q.pop_front();
        }
        q.push_back((now, waited));
    }

    /// (requests, of which waited) within the window.
    pub fn counts(&self) -> (u64, u64) {
        self.counts_at(Instant::now())
    }

    fn counts_at(&self, now: Instant) -> (u64, u64) {
        let mut q = self.0.lock().unwrap();
        prune(&mut q, now);
        let waited = q.iter().filter(|(_, w)| *w).count();
        (q.len() as u64, waited as u64)
    }
}

fn prune(q: &mut VecDeque<(Instant, bool)>, now: Instant) {
    while q
        .front()
        .is_some_and(|(t, _)| now.saturating_duration_since(*t) > WINDOW)
    {
        q.pop_front();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_only_the_last_minute() {
        let r = RecentAdmissions::default();
        let t0 = Instant::now();
        r.record_at(t0, false);
        r.record_at(t0 + Duration::from_secs(10), true);
        r.record_at(t0 + Duration::from_secs(20), true);
        assert_eq!(r.counts_at(t0 + Duration::from_secs(30)), (3, 2));
        // The first leaves the window, then the second.
        assert_eq!(r.counts_at(t0 + Duration::from_secs(61)), (2, 2));
        assert_eq!(r.counts_at(t0 + Duration::from_secs(71)), (1, 1));
        assert_eq!(r.counts_at(t0 + Duration::from_secs(200)), (0, 0));
    }

    #[test]
    fn memory_is_bounded_under_any_rate() {
        let r = RecentAdmissions::default();
        let t0 = Instant::now();
        for i in 0..(MAX_ENTRIES + 10) {
            r.record_at(t0, i % 2 == 0);
        }
        let (n, _) = r.counts_at(t0);
        assert_eq!(n, MAX_ENTRIES as u64);
    }
}
