//! Secrets never leak: the real binary runs at `--log.level debug` against the simulator,
//! with good and wrong credentials of both kinds, from the environment and from files, behind
//! basic auth; its logs, landing page, metrics and 401 answers, and the `Debug` form of the
//! configuration, are searched for every secret and its base64 forms.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use atlas_cost_exporter::cli::Cli;
use atlas_cost_exporter::config::Config;
use atlas_cost_exporter::simulator::{SimConfig, SimCredentials};
use base64::Engine as _;
use clap::Parser as _;
use common::*;

const CLIENT_ID: &str = "mdb_sa_id_leaktest";
const CLIENT_SECRET: &str = "sa-secret-Q7xK2pZ9vN";
const PUBLIC_KEY: &str = "leakpublic";
const PRIVATE_KEY: &str = "api-private-M3vR8tW1";
const WRONG_CLIENT_SECRET: &str = "wrong-sa-secret-H5nB4c";
const WRONG_PRIVATE_KEY: &str = "wrong-api-private-J2kL9";
const WEB_USER: &str = "prometheus";
const WEB_PASSWORD: &str = "web-password-T6yU1iO0";
const WRONG_WEB_PASSWORD: &str = "web-wrong-G8hJ7kL2";

/// Every secret in play, raw and in the base64 forms HTTP Basic puts on the wire.
fn forbidden() -> Vec<String> {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let mut out = Vec::new();
    for (user, secret) in [
        (CLIENT_ID, CLIENT_SECRET),
        (CLIENT_ID, WRONG_CLIENT_SECRET),
        (PUBLIC_KEY, PRIVATE_KEY),
        (PUBLIC_KEY, WRONG_PRIVATE_KEY),
        (WEB_USER, WEB_PASSWORD),
        (WEB_USER, WRONG_WEB_PASSWORD),
    ] {
        out.push(secret.to_owned());
        out.push(b64(secret));
        out.push(b64(&format!("{user}:{secret}")));
    }
    out
}

fn assert_clean(what: &str, text: &str) {
    for s in forbidden() {
        assert!(
            !text.contains(&s),
            "{what} contains the secret {s:?}:\n{text}"
        );
    }
}

/// A web configuration with basic auth for `WEB_USER`; returns its path and the hash.
fn write_web_config(dir: &Path) -> (PathBuf, String) {
    let hash = bcrypt::hash(WEB_PASSWORD, 4).unwrap();
    let path = dir.join("web.yml");
    std::fs::write(
        &path,
        format!("basic_auth_users:\n  {WEB_USER}: '{hash}'\n"),
    )
    .unwrap();
    (path, hash)
}

fn sim_config() -> SimConfig {
    SimConfig {
        orgs: 1,
        credentials: SimCredentials {
            client_id: CLIENT_ID.to_owned(),
            client_secret: CLIENT_SECRET.to_owned(),
            public_key: PUBLIC_KEY.to_owned(),
            private_key: PRIVATE_KEY.to_owned(),
        },
        ..SimConfig::default()
    }
}

/// How the child gets its Atlas credentials.
enum Creds {
    ServiceAccountEnv(&'static str),
    ServiceAccountFile(&'static str),
    ApiKeyEnv(&'static str),
    ApiKeyFile(&'static str),
}

/// The exporter binary as a child process, its stderr collected line by line.
struct ExporterProcess {
    child: Child,
    addr: String,
    stderr: Arc<Mutex<String>>,
    reader: std::thread::JoinHandle<()>,
}

fn spawn(
    sim_url: &str,
    org_id: &str,
    web_config: &Path,
    creds: &Creds,
    dir: &Path,
) -> ExporterProcess {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_atlas-cost-exporter"));
    cmd.env_clear()
        .args([
            "--log.level",
            "debug",
            "--web.listen-address",
            "127.0.0.1:0",
        ])
        .args(["--atlas.base-url", sim_url, "--atlas.org-id", org_id])
        .args(["--atlas.poll-interval", "20ms"])
        .arg("--web.config.file")
        .arg(web_config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    match creds {
        Creds::ServiceAccountEnv(secret) => {
            cmd.env("MONGODB_ATLAS_CLIENT_ID", CLIENT_ID)
                .env("MONGODB_ATLAS_CLIENT_SECRET", secret);
        }
        Creds::ServiceAccountFile(secret) => {
            let f = dir.join("client-secret");
            std::fs::write(&f, format!("{secret}\n")).unwrap();
            cmd.env("MONGODB_ATLAS_CLIENT_ID", CLIENT_ID)
                .arg("--atlas.client-secret-file")
                .arg(f);
        }
        Creds::ApiKeyEnv(secret) => {
            cmd.env("MONGODB_ATLAS_PUBLIC_API_KEY", PUBLIC_KEY)
                .env("MONGODB_ATLAS_PRIVATE_API_KEY", secret);
        }
        Creds::ApiKeyFile(secret) => {
            let f = dir.join("private-key");
            std::fs::write(&f, format!("{secret}\n")).unwrap();
            cmd.env("MONGODB_ATLAS_PUBLIC_API_KEY", PUBLIC_KEY)
                .arg("--atlas.private-api-key-file")
                .arg(f);
        }
    }
    let mut child = cmd.spawn().unwrap();
    let stderr = Arc::new(Mutex::new(String::new()));
    let (addr_tx, addr_rx) = mpsc::channel();
    let pipe = child.stderr.take().unwrap();
    let sink = stderr.clone();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let line = line.unwrap();
            if line.contains("listening")
                && let Some(a) = line
                    .split_whitespace()
                    .find_map(|f| f.strip_prefix("address="))
            {
                let _ = addr_tx.send(a.trim_matches('"').to_owned());
            }
            let mut s = sink.lock().unwrap();
            s.push_str(&line);
            s.push('\n');
        }
    });
    // A bound, so a broken binary fails the test instead of hanging it.
    let addr = addr_rx
        .recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|_| panic!("no 'listening' line:\n{}", stderr.lock().unwrap()));
    ExporterProcess {
        child,
        addr,
        stderr,
        reader,
    }
}

impl ExporterProcess {
    /// Stops the child with SIGTERM (its graceful path) and returns everything it logged.
    fn stop(mut self) -> String {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let exit = self.child.wait().unwrap();
        self.reader.join().unwrap();
        let log = self.stderr.lock().unwrap().clone();
        assert!(exit.success(), "exporter exited with {exit}:\n{log}");
        log
    }
}

/// Runs one credential set: waits for readiness, reads every page with good, wrong and no
/// web credentials; returns (logs, landing page, metrics).
async fn run_case(creds: Creds) -> (String, String, String) {
    let sim = start_sim(sim_config()).await;
    let org_id = sim.sim.dataset().orgs[0].id.clone();
    let dir = temp_dir();
    let (web, _) = write_web_config(&dir);
    let child = spawn(&sim.url, &org_id, &web, &creds, &dir);
    let http = reqwest::Client::new();
    let url = |p: &str| format!("http://{}{p}", child.addr);
    let mut ready = false;
    for _ in 0..1200 {
        let r = http
            .get(url("/readyz"))
            .basic_auth(WEB_USER, Some(WEB_PASSWORD))
            .send()
            .await
            .unwrap();
        if r.status() == 200 {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ready, "never ready:\n{}", child.stderr.lock().unwrap());
    let get = |path: &'static str, password: Option<&'static str>| {
        let mut req = http.get(url(path));
        if let Some(p) = password {
            req = req.basic_auth(WEB_USER, Some(p));
        }
        async move {
            let r = req.send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    let (s, landing) = get("/", Some(WEB_PASSWORD)).await;
    assert_eq!(s, 200);
    let (s, metrics) = get("/metrics", Some(WEB_PASSWORD)).await;
    assert_eq!(s, 200);
    for password in [Some(WRONG_WEB_PASSWORD), None] {
        let (s, body) = get("/metrics", password).await;
        assert_eq!(s, 401);
        assert_clean("a 401 answer", &body);
    }
    let logs = child.stop();
    (logs, landing, metrics)
}

fn query_up(metrics: &str) -> Option<bool> {
    metrics
        .lines()
        .find(|l| l.starts_with("atlas_cost_query_up{"))
        .map(|l| l.ends_with(" 1"))
}

/// Service-account secrets (good from the environment, wrong from a file) appear nowhere:
/// not in debug logs, the landing page, the metrics, or refused requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_account_secrets_never_leak() {
    let (logs, landing, metrics) = run_case(Creds::ServiceAccountEnv(CLIENT_SECRET)).await;
    assert_eq!(query_up(&metrics), Some(true), "{metrics}");
    // Debug logging was on, and the refused web requests were logged.
    assert!(logs.contains("level=debug"), "{logs}");
    assert!(logs.contains("basic auth refused"), "{logs}");
    for (what, text) in [
        ("logs", &logs),
        ("landing page", &landing),
        ("metrics", &metrics),
    ] {
        assert_clean(what, text);
    }

    let (logs, landing, metrics) = run_case(Creds::ServiceAccountFile(WRONG_CLIENT_SECRET)).await;
    assert_eq!(query_up(&metrics), Some(false), "{metrics}");
    assert!(metrics.contains("reason=\"auth\""), "{metrics}");
    for (what, text) in [
        ("logs", &logs),
        ("landing page", &landing),
        ("metrics", &metrics),
    ] {
        assert_clean(what, text);
    }
}

/// API-key private keys (good from a file, wrong from the environment) appear nowhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_key_secrets_never_leak() {
    let (logs, landing, metrics) = run_case(Creds::ApiKeyFile(PRIVATE_KEY)).await;
    assert_eq!(query_up(&metrics), Some(true), "{metrics}");
    for (what, text) in [
        ("logs", &logs),
        ("landing page", &landing),
        ("metrics", &metrics),
    ] {
        assert_clean(what, text);
    }

    let (logs, landing, metrics) = run_case(Creds::ApiKeyEnv(WRONG_PRIVATE_KEY)).await;
    assert_eq!(query_up(&metrics), Some(false), "{metrics}");
    assert!(logs.contains("query refresh failed"), "{logs}");
    for (what, text) in [
        ("logs", &logs),
        ("landing page", &landing),
        ("metrics", &metrics),
    ] {
        assert_clean(what, text);
    }
}

/// `Debug` of the whole configuration shows neither Atlas secrets nor bcrypt hashes, for
/// both kinds of credentials.
#[test]
fn config_debug_shows_no_secret() {
    let dir = temp_dir();
    let (web, hash) = write_web_config(&dir);
    let web = web.to_str().unwrap();
    let args = [
        "atlas-cost-exporter",
        "--atlas.org-id",
        "5f1b2c3d4e5f6a7b8c9d0e1f",
        "--web.config.file",
        web,
    ];
    let flags = Cli::try_parse_from(args).unwrap().flags;
    for env in [
        std::collections::HashMap::from([
            ("MONGODB_ATLAS_CLIENT_ID", CLIENT_ID),
            ("MONGODB_ATLAS_CLIENT_SECRET", CLIENT_SECRET),
        ]),
        std::collections::HashMap::from([
            ("MONGODB_ATLAS_PUBLIC_API_KEY", PUBLIC_KEY),
            ("MONGODB_ATLAS_PRIVATE_API_KEY", PRIVATE_KEY),
        ]),
    ] {
        let config = Config::from_flags(&flags, &env).unwrap();
        let debug = format!("{config:?} {config:#?}");
        assert!(debug.contains("WebConfig"), "{debug}");
        assert!(!debug.contains(&hash), "{debug}");
        assert_clean("Debug of Config", &debug);
    }
}
