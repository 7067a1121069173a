//! Many orgs, several replicas: sharding orgs over replicas, spreading each org's refreshes
//! over the interval, and sharing one OAuth token between orgs that use the same service
//! account (one set of Digest nonces between orgs that use the same API key).
//!
//! Everything here hashes with FNV-1a (64 bits), which is fixed by its definition: the same
//! org lands in the same shard and at the same phase on every version, build and host (Rust's
//! `DefaultHasher` promises none of that).

use std::time::Duration;

use crate::atlas::TokenCache;
use crate::model::Credentials;
pub use crate::model::{Shard, fnv1a64};

/// The org's stable phase within the interval: a fraction of it, from the org id's hash
/// (salted, so that the orgs of one shard are still spread).
pub fn phase(org_id: &str, interval: Duration) -> Duration {
    let mut salted = b"refresh-phase:".to_vec();
    salted.extend_from_slice(org_id.as_bytes());
    // The top 53 bits as a fraction in [0, 1): exact in an f64.
    #[allow(clippy::cast_precision_loss)]
    let fraction = (fnv1a64(&salted) >> 11) as f64 / (1u64 << 53) as f64;
    interval
        .mul_f64(fraction)
        .min(interval.saturating_sub(Duration::from_nanos(1)))
}

/// When an org's second refresh starts, counted from its first (which runs at start-up):
/// one interval plus the org's phase. From then on every org refreshes on its own phase, no
/// two refreshes of an org are less than an interval apart, and the one-off gap after
/// start-up is under two intervals (the staleness alert fires at three).
pub fn second_refresh(org_id: &str, interval: Duration) -> Duration {
    interval + phase(org_id, interval)
}

/// One cache per set of credentials. Orgs that share a service account share its token, so
/// 200 orgs hold one token, not 200 (Atlas allows 100 live tokens per service account); orgs
/// that share an API key share its Digest nonces, so no nonce count is sent twice and an
/// acceptance for one org counts for all.
#[derive(Default)]
pub struct TokenCaches {
    caches: Vec<(Credentials, TokenCache)>,
}

impl TokenCaches {
    /// The cache for these credentials (always `Some`).
    pub fn cache_for(&mut self, credentials: &Credentials) -> Option<TokenCache> {
        if let Some((_, cache)) = self.caches.iter().find(|(c, _)| c == credentials) {
            return Some(cache.clone());
        }
        let cache = TokenCache::default();
        self.caches.push((credentials.clone(), cache.clone()));
        Some(cache)
    }

    /// Distinct credentials seen.
    pub fn len(&self) -> usize {
        self.caches.len()
    }

    /// Whether no credentials were seen.
    pub fn is_empty(&self) -> bool {
        self.caches.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Secret;

    fn org(i: u32) -> String {
        format!("{:024x}", u128::from(i) * 0x9e37_79b9 + 0x5f1b)
    }

    /// FNV-1a matches its published test vectors, so shards never move between versions.
    #[test]
    fn fnv1a_matches_the_reference_vectors() {
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    /// Two shards together export every org exactly once, and both get some.
    #[test]
    fn two_shards_cover_each_org_exactly_once() {
        let shards = [Shard::new(2, 0).expect("ok"), Shard::new(2, 1).expect("ok")];
        let mut per_shard = [0, 0];
        for i in 0..1000 {
            let id = org(i);
            let owners: Vec<usize> = (0..2).filter(|s| shards[*s].owns(&id)).collect();
            assert_eq!(owners.len(), 1, "{id}");
            per_shard[owners[0]] += 1;
        }
        assert!(per_shard.iter().all(|n| *n > 400), "{per_shard:?}");
    }

    /// Any shard count splits the orgs into a partition, and one shard owns everything.
    #[test]
    fn shards_partition_the_orgs_for_any_count() {
        for count in 1..=7 {
            for i in 0..200 {
                let id = org(i);
                let owners = (0..count)
                    .filter(|s| Shard::new(count, *s).expect("ok").owns(&id))
                    .count();
                assert_eq!(owners, 1);
            }
        }
        assert!(Shard::default().owns(&org(1)));
    }

    /// A shard index outside 0..count, or a count of 0, is refused naming the flag.
    #[test]
    fn invalid_shards_name_the_flag() {
        let e = Shard::new(2, 2).expect_err("index too big").0;
        assert!(e.starts_with("--shard.index:"), "{e}");
        let e = Shard::new(0, 0).expect_err("no shards").0;
        assert!(e.starts_with("--shard.count:"), "{e}");
    }

    /// Phases are stable, inside the interval, and spread: 200 orgs over 1h fill each
    /// tenth of the hour.
    #[test]
    fn phases_are_stable_and_spread_over_the_interval() {
        let hour = Duration::from_secs(3600);
        assert_eq!(phase(&org(7), hour), phase(&org(7), hour));
        let mut tenths = [0; 10];
        for i in 0..200 {
            let p = phase(&org(i), hour);
            assert!(p < hour);
            let tenth = usize::try_from(p.as_secs() / 360).expect("small");
            tenths[tenth] += 1;
        }
        assert!(tenths.iter().all(|n| *n >= 8), "{tenths:?}");
    }

    /// The second refresh comes between one and two intervals after the first, on the
    /// org's phase.
    #[test]
    fn second_refresh_is_on_phase_within_bounds() {
        let hour = Duration::from_secs(3600);
        for i in 0..200 {
            let id = org(i);
            let s = second_refresh(&id, hour);
            assert!(s >= hour && s < 2 * hour, "{s:?}");
            assert_eq!(s.as_nanos() % hour.as_nanos(), phase(&id, hour).as_nanos());
        }
    }

    /// Orgs with the same service account, or the same API key, share one cache; other
    /// credentials do not.
    #[test]
    fn same_credentials_share_one_cache() {
        let sa = |id: &str, secret: &str| Credentials::ServiceAccount {
            client_id: id.to_owned(),
            client_secret: Secret::new(secret),
        };
        let mut caches = TokenCaches::default();
        let a = caches.cache_for(&sa("x", "s")).expect("cache");
        let b = caches.cache_for(&sa("x", "s")).expect("cache");
        let c = caches.cache_for(&sa("x", "other")).expect("cache");
        assert!(a.same_as(&b));
        assert!(!a.same_as(&c));
        let key = |private: &str| Credentials::ApiKey {
            public_key: "x".to_owned(),
            private_key: Secret::new(private),
        };
        let d = caches.cache_for(&key("s")).expect("cache");
        let e = caches.cache_for(&key("s")).expect("cache");
        let f = caches.cache_for(&key("other")).expect("cache");
        assert!(d.same_as(&e) && !d.same_as(&f) && !d.same_as(&a));
        assert_eq!(caches.len(), 4);
    }
}
