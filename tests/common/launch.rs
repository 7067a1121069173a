//! The one way a test starts the exporter against a simulator: `start_sim`, then
//! `sim.exporter(queries)` (or `fast_exporter`), any changes, then `ready()` or `start()`;
//! [`Harness::fast_one_org`] does all of it for the tests of one org under faults.

use atlas_cost_exporter::config::{Config, Credentials, QuerySpec};
use atlas_cost_exporter::simulator::SimConfig;

use super::{
    Exporter, Samples, Sim, config, fast, orgs, service_account, services, start_sim, wrong_api_key,
};

/// A simulator with one org, the exporter reading it, and that org's id.
pub struct Harness {
    pub sim: Sim,
    pub exporter: Exporter,
    pub org: String,
}

impl Harness {
    /// The simulator of `sim_config` cut to one org, and the [`fast`] exporter reading it
    /// with `queries` and `credentials`, changed by `tweak`: started, not yet ready.
    pub async fn fast_one_org(
        sim_config: SimConfig,
        credentials: &Credentials,
        queries: &[QuerySpec],
        tweak: impl FnOnce(&mut Config),
    ) -> Harness {
        let sim = start_sim(SimConfig {
            orgs: 1,
            ..sim_config
        })
        .await;
        let org = sim.org(0);
        let exporter = sim
            .fast_exporter(queries)
            .credentials(credentials)
            .tweak(tweak)
            .start()
            .await;
        Harness { sim, exporter, org }
    }

    /// [`Harness::fast_one_org`] with [`wrong_api_key`] and [`services`], once three of its
    /// refreshes have failed with `auth`; returns the scrape that showed it.
    pub async fn wrong_api_key_failing(sim_config: SimConfig) -> (Harness, Samples) {
        let harness =
            Harness::fast_one_org(sim_config, &wrong_api_key(), &[services()], |_| {}).await;
        let failing = harness
            .exporter
            .wait_for_errors("services", &harness.org, "auth", 3.0)
            .await;
        (harness, failing)
    }
}

/// A simulator configuration with `orgs` orgs and every other setting at its default.
pub fn with_orgs(orgs: usize) -> SimConfig {
    SimConfig {
        orgs,
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
