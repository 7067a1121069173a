//! The HTTP client every org's Atlas client shares: one connection pool, no redirects, the
//! configured DNS resolver.

use std::sync::Arc;
use std::time::Duration;

use crate::atlas::AtlasError;
use crate::config::Config;
use crate::model::Endpoint;

/// Adapts a shared resolver to reqwest's `dns_resolver`, which wants a sized type.
struct SharedResolver(Arc<dyn reqwest::dns::Resolve>);

impl reqwest::dns::Resolve for SharedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        self.0.resolve(name)
    }
}

/// The shared HTTP client for `config`.
///
/// # Errors
/// When reqwest cannot build it (no TLS backend).
pub(super) fn build(config: &Config) -> Result<reqwest::Client, AtlasError> {
    let mut http = reqwest::Client::builder();
    if let Some(resolver) = &config.resolver {
        http = http.dns_resolver(Arc::new(SharedResolver(resolver.clone())));
    }
    http.user_agent(concat!("atlas-cost-exporter/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(config.request_timeout.min(Duration::from_secs(10)))
        // Outbound requests go to the configured base URL only: no redirects elsewhere.
        .redirect(reqwest::redirect::Policy::none())
        // Requests in flight are bounded by --refresh.concurrency (discovery included):
        // keep no more idle connections than that.
        .pool_max_idle_per_host(config.concurrency)
        .build()
        .map_err(|e| AtlasError::Transport {
            endpoint: Endpoint::Token,
            message: format!("cannot build the HTTP client: {e}"),
            incomplete: false,
        })
}
