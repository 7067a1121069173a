//! What `check-config` says of the state directory, without changing it: the steps of
//! [`Store::open`](super::Store::open) (create the directory, open and lock `lock`, write a
//! file), each undone as soon as it succeeded, so that it fails with the start-up's own
//! [`StateError`] line; and each configured org's kept file, read and decoded but never set
//! aside, with what a start-up would serve of it.
//!
//! A directory locked by a running exporter is reported, not refused: the configuration is
//! still valid, and `check-config` is run beside a running exporter (`kubectl exec`) to check a
//! new configuration before a restart.

use std::fs::{self, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::query_fingerprint;
use super::store::{LOCK, StateError, open_lock, read_org_file};
use crate::config::QuerySpec;
use crate::series::TagLabels;

/// The state directory as a start-up would find it.
#[derive(Debug)]
pub struct Inspection {
    /// The directory exists (else a start-up creates it, with its parents).
    pub exists: bool,
    /// Another process holds its lock: a start-up beside it is refused.
    pub locked: bool,
    /// Each configured org's kept file, in the order given.
    pub orgs: Vec<KeptFile>,
}

/// One org's kept file.
#[derive(Debug, PartialEq, Eq)]
pub enum KeptFile {
    /// No file: the org starts empty.
    Missing {
        /// The org id.
        org_id: String,
    },
    /// A good file.
    Good {
        /// The org id.
        org_id: String,
        /// Its size.
        bytes: u64,
        /// When it was written.
        written_at: Option<SystemTime>,
        /// Queries whose kept data a start-up serves (same name, same configuration).
        served: usize,
        /// Their series.
        series: usize,
        /// Queries kept under a configuration that has changed since: not served.
        changed: usize,
        /// Its invoice part.
        invoices: KeptInvoices,
    },
    /// A file a start-up sets aside, and why.
    Bad {
        /// The org id.
        org_id: String,
        /// Why it cannot be used.
        reason: String,
    },
}

/// The invoice part of a good file, as a start-up would use it.
#[derive(Debug, PartialEq, Eq)]
pub enum KeptInvoices {
    /// None kept.
    None,
    /// Served at start-up: its SKU series.
    Served {
        /// The kept SKU series.
        skus: usize,
    },
    /// Kept under another invoice configuration (SKU controls, configured orgs): not served.
    Changed,
    /// Kept, but the source is off for the org now: not served.
    Off,
    /// The section is bad: the rest of the file is used, a copy is set aside.
    Bad {
        /// Why.
        reason: String,
    },
}

/// An org of the configuration: its id, its queries and its invoice source.
pub struct ConfiguredOrg<'a> {
    /// The org id.
    pub id: &'a str,
    /// Its queries.
    pub queries: &'a [QuerySpec],
    /// [`invoice_fingerprint`](super::invoice_fingerprint) of its invoice configuration when
    /// the source runs for it; `None` when it is off.
    pub invoices: Option<u64>,
}

/// Checks `dir` as [`Store::open`](super::Store::open) would use it, leaving it as it was,
/// and reads the kept file of each org of `orgs`.
///
/// # Errors
/// The [`StateError`] a start-up with the same directory would stop on (not a directory,
/// cannot be created, not writable, cannot be locked), except that it is locked by another
/// process, which [`Inspection::locked`] reports.
pub fn inspect(
    dir: &Path,
    orgs: &[ConfiguredOrg<'_>],
    tags: &TagLabels,
) -> Result<Inspection, StateError> {
    let shown = dir.display().to_string();
    if dir.exists() && !dir.is_dir() {
        return Err(StateError::NotADirectory { dir: shown });
    }
    let exists = dir.exists();
    let created = create_undoably(dir).map_err(|source| StateError::Create {
        dir: shown.clone(),
        source,
    })?;
    let checked = check_lock_and_write(dir, &shown);
    // Undone whatever the check found: the directories this call created, deepest first.
    for d in created.iter().rev() {
        let _ = fs::remove_dir(d);
    }
    let locked = checked?;
    let orgs = if exists {
        orgs.iter().map(|o| read_kept(dir, o, tags)).collect()
    } else {
        orgs.iter()
            .map(|o| KeptFile::Missing {
                org_id: o.id.to_owned(),
            })
            .collect()
    };
    Ok(Inspection {
        exists,
        locked,
        orgs,
    })
}

/// Creates `dir` and its missing parents as [`Store::open`](super::Store::open) does (0700);
/// returns the directories created, outermost first.
fn create_undoably(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut missing: Vec<PathBuf> = dir
        .ancestors()
        .take_while(|a| !a.as_os_str().is_empty() && !a.exists())
        .map(Path::to_path_buf)
        .collect();
    missing.reverse();
    let mut created = Vec::new();
    for d in &missing {
        match fs::DirBuilder::new().mode(0o700).create(d) {
            Ok(()) => created.push(d.clone()),
            Err(e) if e.kind() == ErrorKind::AlreadyExists && d.is_dir() => {}
            Err(e) => {
                for c in created.iter().rev() {
                    let _ = fs::remove_dir(c);
                }
                return Err(e);
            }
        }
    }
    Ok(created)
}

/// Opens `lock` (removed again when this created it), tries its lock (released at once),
/// and writes and removes a file. `Ok(true)`: another process holds the lock.
fn check_lock_and_write(dir: &Path, shown: &str) -> Result<bool, StateError> {
    let lock_path = dir.join(LOCK);
    let lock_existed = lock_path.exists();
    let lock = open_lock(dir, shown)?;
    let locked = match lock.try_lock() {
        Ok(()) => {
            let _ = lock.unlock();
            false
        }
        Err(fs::TryLockError::WouldBlock) => true,
        Err(fs::TryLockError::Error(source)) => {
            return Err(StateError::Lock {
                dir: shown.to_owned(),
                source,
            });
        }
    };
    drop(lock);
    if !lock_existed {
        let _ = fs::remove_file(&lock_path);
    }
    // Its own name: never the running exporter's temporary files, nor its write check.
    let probe = dir.join(format!(".check-config-{}", std::process::id()));
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&probe)
        .and_then(|f| f.sync_all())
        .and_then(|()| fs::remove_file(&probe))
        .map_err(|source| StateError::NotWritable {
            dir: shown.to_owned(),
            source,
        })?;
    Ok(locked)
}

/// Reads and decodes an org's kept file as [`Store::load`](super::Store::load) does
/// ([`read_org_file`]), without setting it aside.
fn read_kept(dir: &Path, org: &ConfiguredOrg<'_>, tags: &TagLabels) -> KeptFile {
    let org_id = org.id.to_owned();
    match read_org_file(dir, org.id, tags) {
        Ok(None) => KeptFile::Missing { org_id },
        Err(reason) => KeptFile::Bad { org_id, reason },
        Ok(Some((state, bytes))) => {
            let (mut served, mut series, mut changed) = (0, 0, 0);
            for spec in org.queries {
                let Some(q) = state.queries.iter().find(|q| q.name == spec.name) else {
                    continue;
                };
                if q.fingerprint == query_fingerprint(spec, tags) {
                    served += 1;
                    series += q.series.len();
                } else {
                    changed += 1;
                }
            }
            let invoices = match (&state.invoices_error, &state.invoices, org.invoices) {
                (Some(e), _, _) => KeptInvoices::Bad {
                    reason: e.to_string(),
                },
                (None, None, _) => KeptInvoices::None,
                (None, Some(_), None) => KeptInvoices::Off,
                (None, Some(kept), Some(now)) if kept.fingerprint == now => KeptInvoices::Served {
                    skus: kept.data.as_ref().map_or(0, |d| d.skus.len()),
                },
                (None, Some(_), Some(_)) => KeptInvoices::Changed,
            };
            KeptFile::Good {
                org_id,
                bytes,
                written_at: state.written_at,
                served,
                series,
                changed,
                invoices,
            }
        }
    }
}
