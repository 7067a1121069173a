//! The YAML configuration file (`--config.file`) as written: orgs with their credentials and
//! queries, budgets and the tag keys exported as labels. Unknown keys are refused; [`super::validate`] checks the values.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::err;
use crate::model::{ConfigError, GroupBy, ResultFormat};

/// The YAML configuration file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileConfig {
    #[serde(default)]
    pub(super) orgs: Vec<FileOrg>,
    #[serde(default)]
    pub(super) budgets: Vec<crate::budget::FileBudget>,
    /// Tag keys exported as labels, as `--cost.tag-labels` gives them.
    #[serde(default)]
    pub(super) tag_labels: Option<Vec<String>>,
}

/// One org of the file; without `credentials` it takes the environment's, without `queries`
/// the default ones.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileOrg {
    pub(super) id: String,
    #[serde(default)]
    pub(super) credentials: Option<FileCredentials>,
    #[serde(default)]
    pub(super) queries: Option<Vec<FileQuery>>,
    /// Whether the org's invoice source runs; `--invoices.enabled` when absent.
    #[serde(default)]
    pub(super) invoices: Option<bool>,
}

/// Per-org credentials in the YAML file. Secrets are read from a file or a named environment
/// variable, never written in the YAML itself.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileCredentials {
    pub(super) client_id: Option<String>,
    pub(super) client_secret_file: Option<PathBuf>,
    pub(super) client_secret_env: Option<String>,
    pub(super) public_api_key: Option<String>,
    pub(super) private_api_key_file: Option<PathBuf>,
    pub(super) private_api_key_env: Option<String>,
}

/// One query of an org, as written; `months` defaults to `--cost.months`, `group_by` to
/// ungrouped.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileQuery {
    pub(super) name: String,
    #[serde(default)]
    pub(super) group_by: Option<GroupBy>,
    pub(super) months: Option<u32>,
    #[serde(default)]
    pub(super) format: ResultFormat,
    #[serde(default)]
    pub(super) projects: Vec<String>,
    #[serde(default)]
    pub(super) clusters: Vec<String>,
    #[serde(default)]
    pub(super) services: Vec<String>,
    #[serde(default)]
    pub(super) include_partial_matches: bool,
    #[serde(default)]
    pub(super) controls: Option<crate::controls::FileControls>,
}

/// Reads and parses the file at `path`, not yet validated.
///
/// # Errors
/// Names `--config.file` when the file cannot be read or is not valid YAML of this schema.
pub(super) fn read(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).or_else(|e| {
        err(format!(
            "--config.file: cannot read {}: {e}",
            path.display()
        ))
    })?;
    parse(&text, &path.display().to_string())
}

/// Parses the text of the file `name` names, not yet validated.
///
/// # Errors
/// Names `--config.file` when the text is not valid YAML of this schema.
pub(super) fn parse(text: &str, name: &str) -> Result<FileConfig, ConfigError> {
    serde_norway::from_str(text).or_else(|e| {
        err(format!(
            "--config.file: {name}: {}",
            e.to_string().replace('\n', " ")
        ))
    })
}
