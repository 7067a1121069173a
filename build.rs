//! Build information for `atlas_cost_build_info` and `--version`, as Prometheus's own exporters
//! give it: the git commit the binary was built from and the rustc that built it.
//!
//! - `ATLAS_COST_EXPORTER_BUILD_REVISION`: `$ATLAS_COST_EXPORTER_REVISION` when set (the image
//!   build passes it as a build argument: the Docker context holds no `.git`), else
//!   `git rev-parse HEAD` when the sources are a git checkout and git runs, else `unknown`.
//! - `ATLAS_COST_EXPORTER_BUILD_RUSTVERSION`: the version from `$RUSTC --version`
//!   (`1.91.0`), or `unknown`.
//!
//! Both are reduced to `[0-9A-Za-z._+-]`, so they can be written into a label value and a
//! `--version` line without escaping. No dependency: git and rustc are run as processes.

use std::path::{Path, PathBuf};
use std::process::Command;

const REVISION_OVERRIDE: &str = "ATLAS_COST_EXPORTER_REVISION";

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed={REVISION_OVERRIDE}");
    let dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let revision = std::env::var(REVISION_OVERRIDE)
        .ok()
        .map(|r| clean(&r))
        .filter(|r| !r.is_empty())
        .or_else(|| git_revision(&dir))
        .unwrap_or_else(|| "unknown".to_owned());
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let rustversion = run(Command::new(rustc).arg("--version"))
        // "rustc 1.91.0 (f8297e351 2025-10-28)"
        .and_then(|v| v.split_whitespace().nth(1).map(clean))
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=ATLAS_COST_EXPORTER_BUILD_REVISION={revision}");
    println!("cargo:rustc-env=ATLAS_COST_EXPORTER_BUILD_RUSTVERSION={rustversion}");
}

/// Keeps the characters a label value and a version line take without escaping.
fn clean(s: &str) -> String {
    s.trim()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '+' | '-'))
        .take(64)
        .collect()
}

fn run(cmd: &mut Command) -> Option<String> {
    let out = cmd.output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// The commit of HEAD when `dir` is in a git checkout, and tells cargo to run this script
/// again when HEAD moves: a commit changes the branch's ref file (or `packed-refs`), a
/// checkout changes HEAD. Only files that exist are named: a missing one would make cargo
/// rebuild on every build.
fn git_revision(dir: &Path) -> Option<String> {
    let git = |args: &[&str]| run(Command::new("git").arg("-C").arg(dir).args(args));
    // Sources copied into some other repository (a vendored tree) are not that repository's
    // commit.
    let top = PathBuf::from(git(&["rev-parse", "--show-toplevel"])?);
    if top.canonicalize().ok()? != dir.canonicalize().ok()? {
        return None;
    }
    let head = clean(&git(&["rev-parse", "HEAD"])?);
    if head.is_empty() {
        return None;
    }
    let mut watched = vec!["HEAD".to_owned(), "packed-refs".to_owned()];
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        watched.push(branch);
    }
    for name in watched {
        if let Some(path) = git(&["rev-parse", "--git-path", &name]) {
            let path = dir.join(path);
            if path.is_file() {
                println!("cargo:rerun-if-changed={}", path.display());
            }
        }
    }
    Some(head)
}
