//! Requests that fail authentication (or are refused before it): limited per
//! client address and per claimed access key id, counted in aggregate, and
//! sampled into the operator's audit chain. They never reach a tenant's
//! chain, and the only durable write they can cause is a sample, at most
//! [`SAMPLES_PER_SECOND`] a second (burst [`SAMPLE_BURST`]) whoever sends them.
//!
//! The client address is what the host reports (`ApiRequest::client_addr`):
//! untrusted, used for nothing but these buckets. Requests whose host gave no
//! address share one bucket. A request that authenticates never takes a
//! token from these buckets and is never refused by them, so a flood naming
//! a tenant's access key id cannot lock the tenant out.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use super::ratelimit::RateLimit;

/// Failed authentications a second allowed per client address, and per
/// claimed access key id, before further failures are answered
/// `ThrottlingException` (the buckets hold [`FAILURE_BURST`]).
pub const FAILURES_PER_SECOND: f64 = 20.0;
pub const FAILURE_BURST: f64 = 100.0;
/// Custody requests (`Keyward.InitCustody`, `GetUnsealDocument`, `Unseal`,
/// `JoinCluster`, `GetCheckpoint`: answered before authentication) a second
/// per client address, and at most at once. Custodians and joining nodes
/// make a few a second; `GetCheckpoint` reads every scope's root, so an
/// anonymous flood of it must not turn into unbounded store reads.
pub const CUSTODY_PER_SECOND: f64 = 50.0;
pub const CUSTODY_BURST: f64 = 200.0;
/// Sampled failures written to the operator's chain, a second and at most at once.
pub const SAMPLES_PER_SECOND: f64 = 1.0;
pub const SAMPLE_BURST: f64 = 16.0;
/// Distinct addresses (or access key ids) tracked at once; beyond it, new
/// ones share one overflow bucket until idle buckets are forgotten.
pub const MAX_TRACKED: usize = 4096;

/// Bucket of requests whose host reported no client address.
const NO_ADDRESS: &str = "-";
/// Bucket shared by keys beyond [`MAX_TRACKED`].
const OVERFLOW: &str = "\0overflow";

/// What happens to a request that failed authentication.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Answer with its authentication error; when `sample` is `Some(n)`, also
    /// append a record to the operator's chain (`n`: failures since the
    /// previous sample, this one included).
    Reject { sample: Option<u64> },
    /// Over its address's or access key's share: `ThrottlingException`, no record.
    Throttle,
}

/// Aggregate counts since the enclave started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FailureCounts {
    pub rejected: u64,
    pub throttled: u64,
    pub sampled: u64,
}

pub struct AuthFailures {
    by_address: Buckets,
    by_key: Buckets,
    custody_by_address: Buckets,
    samples: Mutex<(f64, f64)>,
    rejected: AtomicU64,
    throttled: AtomicU64,
    sampled: AtomicU64,
    since_sample: AtomicU64,
}

impl Default for AuthFailures {
    fn default() -> Self {
        Self::with_custody_limit(
            RateLimit {
                per_second: FAILURES_PER_SECOND,
                burst: FAILURE_BURST,
            },
            RateLimit {
                per_second: CUSTODY_PER_SECOND,
                burst: CUSTODY_BURST,
            },
        )
    }
}

impl AuthFailures {
    pub fn new(limit: RateLimit) -> Self {
        Self::with_custody_limit(
            limit,
            RateLimit {
                per_second: CUSTODY_PER_SECOND,
                burst: CUSTODY_BURST,
            },
        )
    }

    /// `limit` for failed authentications, `custody` for the custody
    /// requests of one address.
    pub fn with_custody_limit(limit: RateLimit, custody: RateLimit) -> Self {
        AuthFailures {
            by_address: Buckets::new(limit),
            by_key: Buckets::new(limit),
            custody_by_address: Buckets::new(custody),
            samples: Mutex::new((SAMPLE_BURST, 0.0)),
            rejected: AtomicU64::new(0),
            throttled: AtomicU64::new(0),
            sampled: AtomicU64::new(0),
            since_sample: AtomicU64::new(0),
        }
    }

    /// Accounts one failed authentication and says what to do with it.
    pub fn fail(&self, address: Option<&str>, access_key_id: &str, now: f64) -> Verdict {
        // Both buckets pay, so a flood spread over addresses still drains the
        // access key's bucket, and one spread over keys the address's.
        let by_address = self.by_address.take(&address_bucket(address), now);
        let by_key = self.by_key.take(access_key_id, now);
        if !(by_address && by_key) {
            self.throttled.fetch_add(1, Ordering::Relaxed);
            return Verdict::Throttle;
        }
        self.rejected.fetch_add(1, Ordering::Relaxed);
        self.since_sample.fetch_add(1, Ordering::Relaxed);
        let sample = {
            let mut bucket = self.samples.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            take_token(&mut bucket, SAMPLES_PER_SECOND, SAMPLE_BURST, now)
        };
        if !sample {
            return Verdict::Reject { sample: None };
        }
        self.sampled.fetch_add(1, Ordering::Relaxed);
        // At least this one (a concurrent sample may have counted it already).
        let since = self.since_sample.swap(0, Ordering::Relaxed).max(1);
        Verdict::Reject { sample: Some(since) }
    }

    /// Accounts one custody request (served before authentication) of
    /// `address`: `false` when the address is over its share, to be
    /// answered `ThrottlingException` (counted with the throttled failures).
    pub fn custody_request(&self, address: Option<&str>, now: f64) -> bool {
        let admitted = self.custody_by_address.take(&address_bucket(address), now);
        if !admitted {
            self.throttled.fetch_add(1, Ordering::Relaxed);
        }
        admitted
    }

    pub fn counts(&self) -> FailureCounts {
        FailureCounts {
            rejected: self.rejected.load(Ordering::Relaxed),
            throttled: self.throttled.load(Ordering::Relaxed),
            sampled: self.sampled.load(Ordering::Relaxed),
        }
    }
}

/// The bucket of a client address: its IP (the port varies per connection);
/// an IPv6 address by its /64, what one client usually holds.
fn address_bucket(address: Option<&str>) -> String {
    let Some(address) = address else {
        return NO_ADDRESS.to_owned();
    };
    match address.parse::<std::net::SocketAddr>().map(|a| a.ip()) {
        Ok(std::net::IpAddr::V4(ip)) => ip.to_string(),
        Ok(std::net::IpAddr::V6(ip)) => {
            let s = ip.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
        // Not `ip:port`: the text itself, bounded.
        Err(_) => address.chars().take(64).collect(),
    }
}

/// Refills `bucket` (`(tokens, last)`) to `now` and takes a token if there is one.
fn take_token(bucket: &mut (f64, f64), per_second: f64, burst: f64, now: f64) -> bool {
    refill(bucket, per_second, burst, now);
    if bucket.0 >= 1.0 {
        bucket.0 -= 1.0;
        true
    } else {
        false
    }
}

fn refill(bucket: &mut (f64, f64), per_second: f64, burst: f64, now: f64) {
    let elapsed = (now - bucket.1).max(0.0);
    bucket.0 = (bucket.0 + elapsed * per_second).min(burst);
    bucket.1 = bucket.1.max(now);
}

/// Token buckets by a key an attacker chooses, so bounded in number.
struct Buckets {
    limit: RateLimit,
    map: Mutex<BucketMap>,
}

struct BucketMap {
    buckets: HashMap<String, (f64, f64)>,
    /// When idle buckets were last forgotten (at most once a second).
    pruned: f64,
}

impl Buckets {
    fn new(limit: RateLimit) -> Self {
        Buckets {
            limit,
            map: Mutex::new(BucketMap {
                buckets: HashMap::new(),
                pruned: f64::NEG_INFINITY,
            }),
        }
    }

    fn take(&self, key: &str, now: f64) -> bool {
        let RateLimit { per_second, burst } = self.limit;
        let mut map = self.map.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut key = key;
        if !map.buckets.contains_key(key) && map.buckets.len() >= MAX_TRACKED {
            if now - map.pruned >= 1.0 {
                // A full bucket carries nothing: forgetting it changes no answer.
                map.buckets.retain(|_, bucket| {
                    refill(bucket, per_second, burst, now);
                    bucket.0 < burst
                });
                map.pruned = now;
            }
            if map.buckets.len() >= MAX_TRACKED {
                key = OVERFLOW;
            }
        }
        let bucket = map.buckets.entry(key.to_owned()).or_insert((burst, now));
        take_token(bucket, per_second, burst, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limited() -> AuthFailures {
        AuthFailures::new(RateLimit {
            per_second: 1.0,
            burst: 3.0,
        })
    }

    #[test]
    fn custody_requests_are_limited_per_address() {
        let f = AuthFailures::with_custody_limit(
            RateLimit {
                per_second: 1.0,
                burst: 3.0,
            },
            RateLimit {
                per_second: 1.0,
                burst: 2.0,
            },
        );
        let a = Some("10.0.0.1:4000");
        assert!(f.custody_request(a, 0.0));
        assert!(f.custody_request(Some("10.0.0.1:4001"), 0.0));
        assert!(!f.custody_request(a, 0.0), "the address's burst is spent");
        assert!(
            f.custody_request(Some("10.0.0.2:4000"), 0.0),
            "another address has its own"
        );
        assert!(f.custody_request(a, 1.0), "refilled a second later");
        assert_eq!(f.counts().throttled, 1);
        // Custody requests do not spend the address's failure budget.
        assert_eq!(f.fail(a, "AKIA", 1.0), Verdict::Reject { sample: Some(1) });
    }

    #[test]
    fn failures_are_limited_per_address_and_per_key() {
        let f = limited();
        let a = Some("10.0.0.1:4000");
        for _ in 0..3 {
            assert!(matches!(f.fail(a, "AKIAONE", 0.0), Verdict::Reject { .. }));
        }
        assert_eq!(
            f.fail(a, "AKIATWO", 0.0),
            Verdict::Throttle,
            "the address is out of tokens"
        );
        assert_eq!(
            f.fail(Some("10.0.0.1:4001"), "AKIATHREE", 0.0),
            Verdict::Throttle,
            "another port of the same address shares its bucket"
        );
        assert_eq!(
            f.fail(Some("10.0.0.2:1"), "AKIAONE", 0.0),
            Verdict::Throttle,
            "the access key is out of tokens, whatever the address"
        );
        assert!(matches!(
            f.fail(Some("10.0.0.3:1"), "AKIAFIVE", 0.0),
            Verdict::Reject { .. }
        ));
        assert!(
            matches!(f.fail(a, "AKIASIX", 1.0), Verdict::Reject { .. }),
            "a second refills one token"
        );
        let counts = f.counts();
        assert_eq!((counts.rejected, counts.throttled), (5, 3));
        assert!(
            matches!(f.fail(Some("10.0.0.4:1"), "AKIAONE", 1.0), Verdict::Reject { .. }),
            "the key's bucket refilled too"
        );
    }

    #[test]
    fn no_address_is_one_bucket_and_ipv6_is_by_prefix() {
        let f = limited();
        for _ in 0..3 {
            f.fail(None, "AKIA1", 0.0);
        }
        assert_eq!(f.fail(None, "AKIA2", 0.0), Verdict::Throttle);
        assert_eq!(address_bucket(Some("[2001:db8:1:2:3::9]:443")), "2001:db8:1:2::/64");
        assert_eq!(
            address_bucket(Some("[2001:db8:1:2:ffff::1]:80")),
            address_bucket(Some("[2001:db8:1:2::7]:1"))
        );
        assert_eq!(address_bucket(Some("198.51.100.7:5")), "198.51.100.7");
    }

    #[test]
    fn samples_are_bounded_and_carry_the_count_since_the_last() {
        let f = AuthFailures::new(RateLimit {
            per_second: 1e9,
            burst: 1e9,
        });
        let mut samples = Vec::new();
        for i in 0..1000 {
            if let Verdict::Reject { sample: Some(n) } =
                f.fail(Some(&format!("10.1.{}.{}:1", i / 256, i % 256)), "K", 0.0)
            {
                samples.push(n);
            }
        }
        assert_eq!(samples.len(), SAMPLE_BURST as usize, "{samples:?}");
        assert!(samples.iter().all(|&n| n == 1));
        // Ten seconds later: ten more samples; the first counts everything in between.
        let mut later = Vec::new();
        for _ in 0..100 {
            if let Verdict::Reject { sample: Some(n) } = f.fail(Some("10.2.0.1:1"), "K", 10.0) {
                later.push(n);
            }
        }
        assert_eq!(later.len(), 10, "{later:?}");
        assert_eq!(later[0], 1000 - SAMPLE_BURST as u64 + 1);
        let counts = f.counts();
        assert_eq!((counts.rejected, counts.sampled), (1100, SAMPLE_BURST as u64 + 10));
    }

    #[test]
    fn attacker_chosen_keys_are_bounded() {
        let f = limited();
        for i in 0..(MAX_TRACKED + 100) {
            f.fail(Some("10.9.9.9:1"), &format!("AKIA{i}"), 0.0);
        }
        let tracked = f.by_key.map.lock().map(|m| m.buckets.len()).unwrap_or(0);
        assert!(tracked <= MAX_TRACKED + 1, "{tracked}");
        // Idle buckets are forgotten once refilled, making room again.
        f.fail(Some("10.9.9.8:1"), "AKIANEW", 100.0);
        let tracked = f.by_key.map.lock().map(|m| m.buckets.len()).unwrap_or(0);
        assert!(tracked <= 2, "{tracked}");
    }
}
