//! The one way a test starts the exporter against a simulator: `start_sim`, then
//! `sim.exporter(queries)` (or `fast_exporter`), any changes, then `ready()` or `start()`.

use atlas_cost_exporter::config::{Config, Credentials, QuerySpec};
use atlas_cost_exporter::simulator::SimConfig;

use super::{Exporter, Sim, config, fast, orgs, service_account};

/// A simulator configuration with one org and every other setting at its default.
pub fn one_org() -> SimConfig {
    SimConfig {
        orgs: 1,
        ..SimConfig::default()
    }
}

impl Sim {
    /// The exporter reading every org of this simulator with `queries` and the demo service
    /// account, under the test [`config`]: refreshed once an hour, so what a test sees comes
    /// from the first refresh unless it says otherwise.
    pub fn exporter(&self, queries: &[QuerySpec]) -> Launch {
        Launch {
            config: config(&self.url, orgs(&self.sim, &service_account(), queries)),
        }
    }

    /// [`Sim::exporter`] under the [`fast`] configuration, so faults and recoveries show
    /// within seconds.
    pub fn fast_exporter(&self, queries: &[QuerySpec]) -> Launch {
        Launch {
            config: fast(&self.url, orgs(&self.sim, &service_account(), queries)),
        }
    }
}

/// An exporter about to start; each method changes one thing of its configuration.
#[must_use]
pub struct Launch {
    config: Config,
}

impl Launch {
    /// Every org signs in with `credentials` instead of the demo service account.
    pub fn credentials(mut self, credentials: &Credentials) -> Launch {
        for org in &mut self.config.orgs {
            org.credentials = credentials.clone();
        }
        self
    }

    /// Any other change to the configuration.
    pub fn tweak(mut self, change: impl FnOnce(&mut Config)) -> Launch {
        change(&mut self.config);
        self
    }

    /// Starts the exporter and returns at once, before its first refresh ends.
    pub async fn start(self) -> Exporter {
        Exporter::start(self.config).await
    }

    /// Starts the exporter and waits until `/readyz` says every query has had its first
    /// attempt.
    pub async fn ready(self) -> Exporter {
        let exporter = self.start().await;
        exporter.wait_ready().await;
        exporter
    }
}
