//! Outbound requests: an HTTP proxy from the environment is honoured (the real binary, so the
//! real environment handling is what runs).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::process::{Command, Stdio};

use atlas_cost_exporter::simulator::{SimCredentials, SimEndpoint};
use common::*;

/// With `HTTP_PROXY` set, every Atlas request goes through the proxy: the base URL names a
/// host that does not exist, and data still arrives, through the proxy only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_from_the_environment_is_honoured() {
    // The simulator doubles as the forward proxy: a plain-HTTP proxy receives the request in
    // absolute form and the simulator routes it by its path.
    let sim = start_sim(with_orgs(1)).await;
    let org = sim.org(0);
    let creds = SimCredentials::demo();
    let port = free_port();
    let config = temp_dir().join("config.yml");
    std::fs::write(
        &config,
        format!("orgs:\n  - id: {org}\n    queries:\n      - name: services\n        months: 1\n"),
    )
    .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_atlas-cost-exporter"))
        .env_clear()
        .env("HTTP_PROXY", &sim.url)
        .env("MONGODB_ATLAS_CLIENT_ID", &creds.client_id)
        .env("MONGODB_ATLAS_CLIENT_SECRET", &creds.client_secret)
        .args([
            "--atlas.base-url",
            "http://atlas.example.test",
            "--config.file",
            config.to_str().unwrap(),
            "--atlas.poll-interval",
            "50ms",
            "--web.listen-address",
            &format!("127.0.0.1:{port}"),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _guard = KillOnDrop(child);
    let exporter = Exporter::at(([127, 0, 0, 1], port).into());
    exporter.wait_ready().await;
    let body = exporter.scrape_text().await;
    let s = Samples(parse(&body, "text"));
    assert_eq!(s.up("services", &org), Some(1.0), "{body}");
    assert!(!s.costs("services").is_empty());
    assert!(sim.sim.requests(SimEndpoint::Token) >= 1);
    assert!(sim.sim.requests(SimEndpoint::Create) >= 1);
}
