//! Admission control at accept time: the broker-wide and per-listener connection limits and a
//! per-address connection rate limit (token bucket), so one noisy client cannot exhaust the
//! broker. Refusals are counted and logged.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Instant;

use crate::metrics::Refusal;

/// Token buckets per client address: `rate` connections per second, bursts of `rate`.
pub(crate) struct RateLimiter {
    rate: f64,
    buckets: HashMap<IpAddr, (f64, Instant)>,
}

impl RateLimiter {
    pub(crate) fn new(rate_per_second: u32) -> RateLimiter {
        RateLimiter { rate: f64::from(rate_per_second.max(1)), buckets: HashMap::new() }
    }

    /// Takes a token for `ip`; false if it has none left.
    pub(crate) fn allow(&mut self, ip: IpAddr, now: Instant) -> bool {
        // Forget idle addresses now and then, so the map stays as small as the active set.
        if self.buckets.len() > 10_000 {
            let rate = self.rate;
            self.buckets
                .retain(|_, (tokens, at)| *tokens + now.duration_since(*at).as_secs_f64() * rate < rate);
        }
        let (tokens, at) = self.buckets.entry(ip).or_insert((self.rate, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * self.rate).min(self.rate);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Whether a new connection may be admitted, given the open counts.
pub(crate) fn admit(
    open_total: u64,
    max_total: Option<usize>,
    open_here: usize,
    max_here: Option<usize>,
) -> Result<(), Refusal> {
    let over = |open: u64, max: Option<usize>| max.is_some_and(|m| open >= m as u64);
    if over(open_total, max_total) || over(open_here as u64, max_here) {
        return Err(Refusal::MaxConnections);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn rate_limiter_allows_a_burst_then_refills() {
        let mut limiter = RateLimiter::new(2);
        let ip: IpAddr = [10, 0, 0, 1].into();
        let other: IpAddr = [10, 0, 0, 2].into();
        let t = Instant::now();
        assert!(limiter.allow(ip, t));
        assert!(limiter.allow(ip, t));
        assert!(!limiter.allow(ip, t), "burst of 2 used up");
        assert!(limiter.allow(other, t), "other addresses are not affected");
        assert!(limiter.allow(ip, t + Duration::from_millis(600)), "a token back after 0.5 s");
    }

    #[test]
    fn admission_limits() {
        assert_eq!(admit(10, None, 10, None), Ok(()));
        assert_eq!(admit(10, Some(10), 1, None), Err(Refusal::MaxConnections));
        assert_eq!(admit(1, Some(10), 3, Some(3)), Err(Refusal::MaxConnections));
        assert_eq!(admit(1, Some(10), 2, Some(3)), Ok(()));
    }
}
