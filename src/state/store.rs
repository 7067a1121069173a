//! The state directory: one file per org (`org-<id>.state`) and a `lock` file.
//!
//! - A missing directory is created with mode 0700 (its parents too); files are created 0600.
//! - The directory is locked for the life of the process with `flock` on `lock`, as
//!   Prometheus locks its data directory: a second process is refused at start-up, and the
//!   lock goes with the process however it ends (`kill -9` included).
//! - A write goes to `org-<id>.state.tmp`, is fsynced, renamed over the file, and the
//!   directory is fsynced: a crash at any moment leaves the last complete file.
//! - A file that cannot be used is set aside, renamed `org-<id>.state.bad-<unix seconds>`
//!   (never deleted), and logged once with the reason; the org starts without it.
//! - A file whose invoice part alone is bad is used without it: a copy is set aside under the
//!   same name (the file itself is replaced at the org's next write), logged once.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::{OrgState, codec};
use crate::model::is_atlas_id;
use crate::series::TagLabels;

/// Name of the lock file in the directory.
pub(super) const LOCK: &str = "lock";
/// Suffix of a file being written.
const TMP: &str = ".tmp";

/// Why the state directory cannot be used, or a write failed.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The directory could not be created.
    #[error("--storage.path {dir}: cannot create the directory: {source}")]
    Create {
        /// The directory.
        dir: String,
        /// Why.
        source: std::io::Error,
    },
    /// The path is not a directory.
    #[error("--storage.path {dir}: not a directory")]
    NotADirectory {
        /// The path.
        dir: String,
    },
    /// Another process holds the lock.
    #[error(
        "--storage.path {dir}: the directory is locked by another process (lock file {dir}/lock); \
         give each exporter its own directory"
    )]
    Locked {
        /// The directory.
        dir: String,
    },
    /// The lock could not be taken for another reason (a file system without locks).
    #[error("--storage.path {dir}: cannot lock {dir}/lock: {source}")]
    Lock {
        /// The directory.
        dir: String,
        /// Why.
        source: std::io::Error,
    },
    /// Files cannot be created or written in the directory.
    #[error("--storage.path {dir}: the directory is not writable: {source}")]
    NotWritable {
        /// The directory.
        dir: String,
        /// Why.
        source: std::io::Error,
    },
    /// An org's state could not be encoded.
    #[error("encoding the state of org {org}: {reason}")]
    Encode {
        /// The org.
        org: String,
        /// Why.
        reason: String,
    },
    /// An org's file could not be written.
    #[error("writing {path}: {source}")]
    Write {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

/// The name of an org's state file.
pub fn file_name(org_id: &str) -> String {
    format!("org-{org_id}.state")
}

/// What the start-up read of the directory found.
#[derive(Debug, Default)]
pub struct Loaded {
    /// The state of each configured org that had a good file.
    pub orgs: Vec<OrgState>,
    /// Files set aside because they could not be used.
    pub set_aside: u64,
    /// Bytes of the files read.
    pub bytes: u64,
    /// Bytes of each org's file read.
    pub sizes: Vec<(String, u64)>,
}

/// Opens (creating it 0600 when missing) the directory's lock file, unlocked.
///
/// # Errors
/// [`StateError::NotWritable`]: the file cannot be created or opened.
pub(super) fn open_lock(dir: &Path, shown: &str) -> Result<File, StateError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(dir.join(LOCK))
        .map_err(|source| StateError::NotWritable {
            dir: shown.to_owned(),
            source,
        })
}

/// Reads and decodes the kept file of `org_id` in `dir`, its series rendered with `tags`:
/// `None` when there is none (or the id is not an org id), its state and size when it is
/// good, or why it cannot be used (unreadable, undecodable, another org's).
pub(super) fn read_org_file(
    dir: &Path,
    org_id: &str,
    tags: &TagLabels,
) -> Result<Option<(OrgState, u64)>, String> {
    if !is_atlas_id(org_id) {
        return Ok(None);
    }
    let bytes = match fs::read(dir.join(file_name(org_id))) {
        Ok(b) => b,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot be read: {e}")),
    };
    let state = codec::decode(&bytes, tags).map_err(|e| e.to_string())?;
    if state.org_id != org_id {
        return Err(format!(
            "holds the state of org {:?}, not {org_id}",
            state.org_id
        ));
    }
    Ok(Some((state, bytes.len() as u64)))
}

/// The open, locked state directory.
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    /// Holds the lock while the store lives (the process, in practice).
    _lock: File,
}

impl Store {
    /// Creates `dir` when missing (0700), locks it, checks that files can be written in it,
    /// and removes what a crash left half written.
    ///
    /// # Errors
    /// One line naming the directory: it cannot be created, is not a directory, is locked by
    /// another process, or is not writable.
    pub fn open(dir: &Path) -> Result<Store, StateError> {
        let shown = dir.display().to_string();
        if dir.exists() && !dir.is_dir() {
            return Err(StateError::NotADirectory { dir: shown });
        }
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| StateError::Create {
                dir: shown.clone(),
                source,
            })?;
        let lock = open_lock(dir, &shown)?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => return Err(StateError::Locked { dir: shown }),
            Err(fs::TryLockError::Error(source)) => {
                return Err(StateError::Lock { dir: shown, source });
            }
        }
        let store = Store {
            dir: dir.to_owned(),
            _lock: lock,
        };
        store.remove_leftovers();
        // A write now, so an unwritable directory stops the start-up, not the first refresh.
        store
            .write_file(".write-check", b"ok\n")
            .and_then(fs::remove_file)
            .map_err(|source| StateError::NotWritable { dir: shown, source })?;
        Ok(store)
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Temporary files of writes a crash interrupted: never a complete state, removed.
    fn remove_leftovers(&self) {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            if name.to_string_lossy().ends_with(TMP) {
                let _ = fs::remove_file(entry.path());
            }
        }
    }

    /// Reads the state of each org of `org_ids`, its series rendered with `tags`. A file that
    /// cannot be used is set aside and logged once (warn) with the reason; files of orgs not
    /// in `org_ids` are left alone and never read (logged at info).
    pub fn load(&self, org_ids: &[String], tags: &TagLabels) -> Loaded {
        let mut loaded = Loaded::default();
        for org_id in org_ids {
            let path = self.dir.join(file_name(org_id));
            match read_org_file(&self.dir, org_id, tags) {
                Ok(None) => {}
                Ok(Some((state, bytes))) => {
                    if let Some(error) = &state.invoices_error {
                        self.copy_aside(&path, &error.to_string());
                        loaded.set_aside += 1;
                    }
                    loaded.bytes += bytes;
                    loaded.sizes.push((org_id.clone(), bytes));
                    loaded.orgs.push(state);
                }
                Err(reason) => {
                    self.set_aside(&path, &reason);
                    loaded.set_aside += 1;
                }
            }
        }
        self.log_unconfigured(org_ids);
        loaded
    }

    /// Logs the state files of orgs that are not configured: they are kept, never served.
    fn log_unconfigured(&self, org_ids: &[String]) {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(id) = name
                .strip_prefix("org-")
                .and_then(|n| n.strip_suffix(".state"))
                && !org_ids.iter().any(|o| o == id)
            {
                tracing::info!(
                    file = %entry.path().display(),
                    "kept state of an org that is not in this configuration (or not in this \
                     shard): not served, left in place"
                );
            }
        }
    }

    /// A free name to set `path` aside under: `<path>.bad-<unix seconds>[-<n>]`.
    fn aside_name(path: &Path) -> PathBuf {
        let secs = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut aside = PathBuf::from(format!("{}.bad-{secs}", path.display()));
        let mut n = 1;
        while aside.exists() {
            aside = PathBuf::from(format!("{}.bad-{secs}-{n}", path.display()));
            n += 1;
        }
        aside
    }

    /// Copies a file whose invoice part cannot be used out of the way (its other parts are
    /// used, and the file is replaced at the next write), and logs why.
    fn copy_aside(&self, path: &Path, reason: &str) {
        let aside = Self::aside_name(path);
        match fs::copy(path, &aside) {
            Ok(_) => tracing::warn!(
                file = %path.display(),
                copied_to = %aside.display(),
                reason,
                "the kept state's invoice part is unusable: a copy set aside; the rest of the \
                 state is served, the invoice source starts without its kept data"
            ),
            Err(e) => tracing::warn!(
                file = %path.display(),
                reason,
                error = %e,
                "the kept state's invoice part is unusable, and a copy could not be set aside; \
                 the rest of the state is served, the invoice source starts without its kept data"
            ),
        }
    }

    /// Renames a file that cannot be used out of the way, and logs why.
    fn set_aside(&self, path: &Path, reason: &str) {
        let aside = Self::aside_name(path);
        match fs::rename(path, &aside) {
            Ok(()) => tracing::warn!(
                file = %path.display(),
                moved_to = %aside.display(),
                reason,
                "kept state not used: set aside, starting without it"
            ),
            Err(e) => tracing::warn!(
                file = %path.display(),
                reason,
                error = %e,
                "kept state not used, and it could not be set aside: starting without it"
            ),
        }
    }

    /// Writes `state` as its org's file, atomically and durably; returns its size.
    ///
    /// # Errors
    /// When the state cannot be encoded or the file cannot be written, renamed or synced;
    /// the previous file is then left as it was.
    pub fn write(&self, state: &OrgState) -> Result<u64, StateError> {
        if !is_atlas_id(&state.org_id) {
            return Err(StateError::Encode {
                org: state.org_id.clone(),
                reason: "not an org id".to_owned(),
            });
        }
        let bytes = codec::encode(state).map_err(|reason| StateError::Encode {
            org: state.org_id.clone(),
            reason,
        })?;
        let name = file_name(&state.org_id);
        self.write_file(&name, &bytes)
            .map_err(|source| StateError::Write {
                path: self.dir.join(&name).display().to_string(),
                source,
            })?;
        Ok(bytes.len() as u64)
    }

    /// `bytes` into `name`: a temporary file, fsynced, renamed over `name`, the directory
    /// fsynced. The temporary file is removed when a step fails.
    fn write_file(&self, name: &str, bytes: &[u8]) -> std::io::Result<PathBuf> {
        let path = self.dir.join(name);
        let tmp = self.dir.join(format!("{name}{TMP}"));
        let written = (|| {
            let mut f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(bytes)?;
            f.sync_all()?;
            drop(f);
            fs::rename(&tmp, &path)?;
            File::open(&self.dir)?.sync_all()
        })();
        if written.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        written.map(|()| path)
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    const ORG: &str = "5f1b2c3d4e5f6a7b8c9d0e1f";

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "atlas-state-{name}-{}-{}",
            std::process::id(),
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        ));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).expect("exists").permissions().mode() & 0o777
    }

    fn state() -> OrgState {
        OrgState {
            org_id: ORG.to_owned(),
            ..OrgState::default()
        }
    }

    /// A missing directory is created 0700 with its parents; the lock and every state file
    /// are 0600; what is written reads back; a temporary file a crash left is removed.
    #[test]
    fn the_directory_is_created_private_and_files_are_0600() {
        let root = temp("create");
        let dir = root.join("a/b");
        let store = Store::open(&dir).expect("opens");
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&root.join("a")), 0o700);
        assert_eq!(mode(&dir.join(LOCK)), 0o600);
        let size = store.write(&state()).expect("writes");
        let file = dir.join(file_name(ORG));
        assert_eq!(mode(&file), 0o600);
        assert_eq!(fs::metadata(&file).expect("exists").len(), size);
        let loaded = store.load(&[ORG.to_owned()], &TagLabels::default());
        assert_eq!(loaded.orgs.len(), 1);
        assert_eq!((loaded.set_aside, loaded.bytes), (0, size));
        drop(store);
        fs::write(dir.join("org-x.state.tmp"), b"half").expect("writes");
        let _store = Store::open(&dir).expect("opens again");
        assert!(!dir.join("org-x.state.tmp").exists());
        let _ = fs::remove_dir_all(root);
    }

    /// A second store on the same directory is refused while the first lives, with one line
    /// naming the directory; once the first is gone the directory opens again.
    #[test]
    fn a_locked_directory_is_refused_with_its_name() {
        let dir = temp("lock");
        let first = Store::open(&dir).expect("opens");
        let e = Store::open(&dir).expect_err("locked");
        assert!(matches!(e, StateError::Locked { .. }), "{e}");
        let msg = e.to_string();
        assert!(
            msg.contains(&dir.display().to_string()) && !msg.contains('\n'),
            "{msg}"
        );
        drop(first);
        Store::open(&dir).expect("free again");
        let _ = fs::remove_dir_all(dir);
    }

    /// A path that cannot be a directory (under a regular file) is refused with one line
    /// naming it.
    #[test]
    fn a_path_that_cannot_be_a_directory_is_refused() {
        let root = temp("file");
        fs::create_dir_all(&root).expect("creates");
        let file = root.join("plain");
        fs::write(&file, b"x").expect("writes");
        for path in [file.clone(), file.join("sub")] {
            let e = Store::open(&path).expect_err("refused");
            let msg = e.to_string();
            assert!(
                msg.starts_with(&format!("--storage.path {}: ", path.display())),
                "{msg}"
            );
        }
        let _ = fs::remove_dir_all(root);
    }

    /// A file that does not decode, or holds another org, is renamed aside with its bytes
    /// intact (not deleted); the org loads nothing, and the next load finds nothing to set
    /// aside again.
    #[test]
    fn a_bad_file_is_set_aside_not_deleted() {
        let dir = temp("bad");
        let store = Store::open(&dir).expect("opens");
        let other = "6a7b8c9d0e1f5f1b2c3d4e5f";
        let file = dir.join(file_name(ORG));
        for bytes in [b"garbage".to_vec(), {
            let mut s = state();
            s.org_id = other.to_owned();
            codec::encode(&s).expect("encodes")
        }] {
            fs::write(&file, &bytes).expect("writes");
            let loaded = store.load(&[ORG.to_owned()], &TagLabels::default());
            assert!(loaded.orgs.is_empty());
            assert_eq!(loaded.set_aside, 1);
            assert!(!file.exists());
            let aside: Vec<PathBuf> = fs::read_dir(&dir)
                .expect("lists")
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.to_string_lossy().contains(".state.bad-"))
                .collect();
            assert!(
                aside
                    .iter()
                    .any(|p| fs::read(p).ok() == Some(bytes.clone()))
            );
            assert_eq!(
                store
                    .load(&[ORG.to_owned()], &TagLabels::default())
                    .set_aside,
                0
            );
        }
        let _ = fs::remove_dir_all(dir);
    }

    /// A file whose invoice part alone is bad is used without it: the org loads its other
    /// parts, a copy of the file is set aside (counted) and the file stays in place.
    #[test]
    fn a_file_with_a_bad_invoice_part_is_used_and_a_copy_set_aside() {
        let dir = temp("bad-invoices");
        let store = Store::open(&dir).expect("opens");
        let mut kept = state();
        kept.invoices = Some(super::super::InvoiceState {
            fingerprint: 7,
            status: super::super::KeptSourceStatus::default(),
            data: None,
            closed: None,
        });
        store.write(&kept).expect("writes");
        let file = dir.join(file_name(ORG));
        let mut bytes = fs::read(&file).expect("reads");
        let last = bytes.len() - 1;
        bytes[last] ^= 0x01;
        fs::write(&file, &bytes).expect("writes");
        let loaded = store.load(&[ORG.to_owned()], &TagLabels::default());
        assert_eq!((loaded.orgs.len(), loaded.set_aside), (1, 1));
        assert!(loaded.orgs[0].invoices.is_none());
        assert!(matches!(
            loaded.orgs[0].invoices_error,
            Some(codec::DecodeError::Checksum { .. })
        ));
        assert_eq!(fs::read(&file).expect("still in place"), bytes);
        let aside: Vec<PathBuf> = fs::read_dir(&dir)
            .expect("lists")
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.to_string_lossy().contains(".state.bad-"))
            .collect();
        assert_eq!(aside.len(), 1, "{aside:?}");
        assert_eq!(fs::read(&aside[0]).expect("reads"), bytes);
        assert_eq!(mode(&aside[0]), 0o600);
        let _ = fs::remove_dir_all(dir);
    }
}
