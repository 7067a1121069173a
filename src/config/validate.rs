//! Validation: flags, environment and the YAML file checked once, at start-up, into a
//! [`Config`]. Every error is one line naming the flag, variable or YAML key that is wrong.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::env::{self, Env, credentials_from_env};
use super::{Config, DEFAULT_MAX_RESPONSE_BYTES, MAX_MONTHS, OrgConfig, QuerySpec, err, file};
use crate::cli::Flags;
use crate::model::{ConfigError, GroupBy, Shard, is_atlas_id, system_clock};
use crate::series::TagLabels;

impl Config {
    /// What a start-up validates: [`Config::from_flags`], or with `--demo` the same with a
    /// placeholder org and credentials (the demo replaces both with the simulator's, and
    /// keeps the rest, a `--config.file`'s budgets included).
    ///
    /// # Errors
    /// A [`ConfigError`] that names the flag, variable or key that is wrong.
    pub fn at_startup(flags: &Flags, env: &dyn Env) -> Result<Config, ConfigError> {
        if !flags.demo {
            return Config::from_flags(flags, env);
        }
        let mut demo_flags = flags.clone();
        demo_flags.org_ids = vec!["000000000000000000000000".to_owned()];
        let demo_env = std::collections::HashMap::from([
            (env::CLIENT_ID, "demo"),
            (env::CLIENT_SECRET, "demo"),
        ]);
        Config::from_flags(&demo_flags, &demo_env)
    }

    /// Validates flags, environment and the YAML file into a configuration.
    ///
    /// # Errors
    /// A [`ConfigError`] that names the flag, variable or key that is wrong.
    pub fn from_flags(flags: &Flags, env: &dyn Env) -> Result<Config, ConfigError> {
        Config::validated(flags, env).map_err(ConfigError::one_line)
    }

    fn validated(flags: &Flags, env: &dyn Env) -> Result<Config, ConfigError> {
        let listen = parse_listen_address(&flags.listen_address)?;
        if !flags.telemetry_path.starts_with('/') || flags.telemetry_path.len() < 2 {
            return err(format!(
                "--web.telemetry-path: {:?} must start with '/' and not be '/' alone",
                flags.telemetry_path
            ));
        }
        if ["/healthz", "/readyz"].contains(&flags.telemetry_path.as_str()) {
            return err(format!(
                "--web.telemetry-path: {} is taken by the exporter itself",
                flags.telemetry_path
            ));
        }
        let base_url = parse_base_url(&flags.base_url)?;
        validate_months("--cost.months", flags.months)?;
        if flags.refresh_interval < Duration::from_secs(1) {
            return err("--refresh.interval: must be at least 1s");
        }
        if flags.concurrency == 0 {
            return err("--refresh.concurrency: must be at least 1");
        }
        if flags.requests_per_minute == 0 {
            return err("--atlas.requests-per-minute: must be at least 1");
        }
        if flags.request_timeout.is_zero() {
            return err("--atlas.request-timeout: must be more than 0s");
        }
        if flags.query_timeout < flags.request_timeout {
            return err("--atlas.query-timeout: must be at least --atlas.request-timeout");
        }
        if flags.poll_interval.is_zero() {
            return err("--atlas.poll-interval: must be more than 0s");
        }
        let org_ids: Vec<String> = flags
            .org_ids
            .iter()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect();
        if let Some(bad) = org_ids.iter().find(|id| !is_atlas_id(id)) {
            return err(format!(
                "--atlas.org-id: {bad:?} is not an Atlas org id (24 lowercase hex characters)"
            ));
        }
        let flag_tags = TagLabels::new("--cost.tag-labels", &flags.tag_labels)?;
        let (mut orgs, budgets, tag_labels) = match &flags.config_file {
            Some(path) => load_file(path, flags, env, flag_tags)?,
            None => (Vec::new(), Vec::new(), flag_tags),
        };
        if !org_ids.is_empty() {
            let credentials = credentials_from_env(flags, env)?;
            for id in org_ids {
                if orgs.iter().any(|o| o.id == id) {
                    return err(format!("--atlas.org-id: {id} is given twice"));
                }
                orgs.push(OrgConfig {
                    id,
                    credentials: credentials.clone(),
                    queries: QuerySpec::defaults(flags.months),
                    invoices: flags.invoices_enabled,
                });
            }
        }
        let web = match &flags.web_config_file {
            Some(path) => Some(Arc::new(
                crate::web_config::WebConfig::load(path).map_err(|e| ConfigError(e.to_string()))?,
            )),
            None => None,
        };
        if orgs.is_empty() {
            return err(
                "--atlas.org-id: no org to export; give --atlas.org-id (or MONGODB_ATLAS_ORG_ID), \
                 a --config.file with orgs, or --demo",
            );
        }
        let budgets = validate_budgets(budgets, &orgs, &tag_labels)?;
        let shard = shard(flags)?;
        // Budgets are validated against every org first: the same file serves every shard.
        let invoices_elsewhere = orgs
            .iter()
            .filter(|o| o.invoices && !shard.owns(&o.id))
            .map(|o| o.id.clone())
            .collect();
        orgs.retain(|o| shard.owns(&o.id));
        Ok(Config {
            listen,
            telemetry_path: flags.telemetry_path.clone(),
            base_url,
            orgs,
            refresh_interval: flags.refresh_interval,
            concurrency: flags.concurrency,
            request_timeout: flags.request_timeout,
            query_timeout: flags.query_timeout,
            poll_interval: flags.poll_interval,
            requests_per_minute: flags.requests_per_minute,
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
            clock: system_clock(),
            resolver: None,
            budgets,
            tag_labels,
            sku_controls: sku_controls(flags)?,
            web,
            storage_path: flags.storage_path.clone(),
            invoices_elsewhere,
        })
    }
}

/// The SKU controls of the `--invoices.*` flags.
///
/// # Errors
/// Names the flag: a regex that does not compile, a negative or non-finite minimum, a top
/// or series limit of 0.
pub fn sku_controls(flags: &Flags) -> Result<crate::invoice::SkuControls, ConfigError> {
    let regex =
        |flag: &str, source: &Option<String>| -> Result<Option<regex::Regex>, ConfigError> {
            match source {
                None => Ok(None),
                Some(s) => regex::Regex::new(&format!("^(?:{s})$"))
                    .map(Some)
                    .map_err(|e| {
                        ConfigError(format!(
                            "{flag}: {s:?} is not a regex: {}",
                            e.to_string().replace('\n', " ")
                        ))
                    }),
            }
        };
    if flags.sku_top == Some(0) {
        return err("--invoices.sku-top: must be at least 1");
    }
    if flags.sku_max_series == Some(0) {
        return err("--invoices.max-series: must be at least 1");
    }
    let min_micros = match flags.sku_min_usd {
        None => None,
        Some(usd) => match crate::model::usd_to_micros(usd).filter(|m| *m >= 0) {
            Some(m) => Some(m),
            None => {
                return err(format!(
                    "--invoices.sku-min-usd: {usd} must be a finite amount of 0 or more"
                ));
            }
        },
    };
    Ok(crate::invoice::SkuControls {
        allow: regex("--invoices.sku-allow", &flags.sku_allow)?,
        deny: regex("--invoices.sku-deny", &flags.sku_deny)?,
        min_micros,
        top: flags.sku_top,
        max_series: flags.sku_max_series,
    })
}

/// This replica's shard: `--shard.count` with `--shard.index`, or with the ordinal that
/// `--shard.pod-name` ends in (a StatefulSet pod `atlas-cost-exporter-2` is shard 2).
///
/// # Errors
/// Names the flag: a count of 0, an index not below the count, a pod name without an ordinal.
pub fn shard(flags: &Flags) -> Result<Shard, ConfigError> {
    let Some(pod) = &flags.shard_pod_name else {
        return Shard::new(flags.shard_count, flags.shard_index);
    };
    let ordinal = pod
        .rsplit_once('-')
        .map(|(_, n)| n)
        .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|n| n.parse::<u32>().ok());
    let Some(index) = ordinal else {
        return err(format!(
            "--shard.pod-name: {pod:?} does not end in -<ordinal> (a StatefulSet pod name \
             such as atlas-cost-exporter-2)"
        ));
    };
    // The count's own error first, then the ordinal's against it.
    Shard::new(flags.shard_count, 0)?;
    Shard::new(flags.shard_count, index).or_else(|_| {
        err(format!(
            "--shard.pod-name: {pod:?} has ordinal {index}, not below --shard.count ({}): \
             the StatefulSet has more replicas than shards",
            flags.shard_count
        ))
    })
}

/// Parses a Prometheus-style listen address: `:9879`, `0.0.0.0:9879`, `[::1]:9879`,
/// `localhost:9879`.
///
/// # Errors
/// Names `--web.listen-address` when the address does not parse or resolve.
pub fn parse_listen_address(s: &str) -> Result<SocketAddr, ConfigError> {
    let full = if s.starts_with(':') {
        format!("0.0.0.0{s}")
    } else {
        s.to_owned()
    };
    full.to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .map_or_else(
            || {
                err(format!(
                    "--web.listen-address: {s:?} is not a host:port address"
                ))
            },
            Ok,
        )
}

/// Checks the Atlas base URL and strips a trailing slash.
///
/// # Errors
/// Names `--atlas.base-url` when it is not an http(s) URL with a host and no path.
pub fn parse_base_url(s: &str) -> Result<String, ConfigError> {
    let trimmed = s.trim_end_matches('/');
    let rest = trimmed
        .strip_prefix("https://")
        .or_else(|| trimmed.strip_prefix("http://"));
    match rest {
        Some(host) if !host.is_empty() && !host.contains(['/', '?', '#', '@', ' ']) => {
            Ok(trimmed.to_owned())
        }
        _ => err(format!(
            "--atlas.base-url: {s:?} must be an http:// or https:// URL with a host and no path"
        )),
    }
}

fn is_query_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

fn validate_months(key: &str, months: u32) -> Result<u32, ConfigError> {
    if (1..=MAX_MONTHS).contains(&months) {
        Ok(months)
    } else {
        err(format!(
            "{key}: {months} is out of range (1 to {MAX_MONTHS})"
        ))
    }
}

fn validate_ids(key: &str, ids: &[String]) -> Result<(), ConfigError> {
    match ids.iter().find(|id| !is_atlas_id(id)) {
        Some(bad) => err(format!(
            "{key}: {bad:?} is not an Atlas id (24 lowercase hex characters)"
        )),
        None => Ok(()),
    }
}

fn file_query(
    key: &str,
    q: file::FileQuery,
    default_months: u32,
    tags: &TagLabels,
) -> Result<QuerySpec, ConfigError> {
    if !is_query_name(&q.name) {
        return err(format!(
            "{key}.name: {:?} must be 1 to 64 letters, digits, '_', '-' or '.'",
            q.name
        ));
    }
    let months = validate_months(&format!("{key}.months"), q.months.unwrap_or(default_months))?;
    validate_ids(&format!("{key}.projects"), &q.projects)?;
    validate_ids(&format!("{key}.clusters"), &q.clusters)?;
    if let Some(bad) = q.services.iter().find(|s| s.trim().is_empty()) {
        return err(format!("{key}.services: {bad:?} is not a service name"));
    }
    let group_by = q.group_by.unwrap_or(GroupBy::Ungrouped);
    if group_by == GroupBy::Ungrouped && q.group_by.is_some() {
        return err(format!(
            "{key}.group_by: ungrouped is written by leaving group_by out"
        ));
    }
    if group_by == GroupBy::Services && q.services.is_empty() {
        return err(format!(
            "{key}.group_by: services needs a services list (Atlas refuses a groupBy without \
             its filter); leave group_by out to get every service, one row per service and month"
        ));
    }
    Ok(QuerySpec {
        name: q.name,
        group_by,
        months,
        format: q.format,
        projects: q.projects,
        clusters: q.clusters,
        services: q.services,
        include_partial_matches: q.include_partial_matches,
        controls: match q.controls {
            Some(c) => crate::controls::Controls::from_file(key, c, months, tags)?,
            None => crate::controls::Controls::default(),
        },
    })
}

/// Validates the budgets of a file against `orgs` and their queries, their scopes against
/// the tag labels `tags` ([`crate::budget::validate`]).
///
/// # Errors
/// A [`ConfigError`] naming the budget's key.
pub fn validate_budgets(
    file: Vec<crate::budget::FileBudget>,
    orgs: &[OrgConfig],
    tags: &TagLabels,
) -> Result<Vec<crate::budget::Budget>, ConfigError> {
    let names: Vec<Vec<&str>> = orgs
        .iter()
        .map(|o| o.queries.iter().map(|q| q.name.as_str()).collect())
        .collect();
    let org_queries: Vec<crate::budget::OrgQueries<'_>> = orgs
        .iter()
        .zip(&names)
        .map(|(o, n)| crate::budget::OrgQueries {
            id: &o.id,
            queries: n,
        })
        .collect();
    crate::budget::validate(file, &org_queries, tags)
}

/// The orgs of the file, its budgets (validated once every org is known) and the tag labels.
type FileContents = (Vec<OrgConfig>, Vec<crate::budget::FileBudget>, TagLabels);

fn load_file(
    path: &Path,
    flags: &Flags,
    env: &dyn Env,
    flag_tags: TagLabels,
) -> Result<FileContents, ConfigError> {
    load_parsed(file::read(path)?, flags, env, flag_tags)
}

/// The orgs and budgets of a configuration file's text, validated as `--config.file` is
/// (budgets against the file's orgs): the fuzz targets' entry, without a file on disk.
///
/// # Errors
/// As [`Config::from_flags`] for the file's keys.
#[doc(hidden)]
pub fn fuzz_file(
    text: &str,
    flags: &Flags,
    env: &dyn Env,
) -> Result<(Vec<OrgConfig>, Vec<crate::budget::Budget>), ConfigError> {
    let checked = || {
        let flag_tags = TagLabels::new("--cost.tag-labels", &flags.tag_labels)?;
        let file = file::parse(text, "fuzz.yml")?;
        let (orgs, budgets, tags) = load_parsed(file, flags, env, flag_tags)?;
        let budgets = validate_budgets(budgets, &orgs, &tags)?;
        Ok((orgs, budgets))
    };
    checked().map_err(ConfigError::one_line)
}

fn load_parsed(
    file: file::FileConfig,
    flags: &Flags,
    env: &dyn Env,
    flag_tags: TagLabels,
) -> Result<FileContents, ConfigError> {
    let tags = match &file.tag_labels {
        Some(_) if !flag_tags.is_empty() => {
            return err(
                "tag_labels: the tag labels are given both in --cost.tag-labels (or \
                 ATLAS_EXPORTER_COST_TAG_LABELS) and in the file; give them once",
            );
        }
        Some(keys) => TagLabels::new("tag_labels", keys)?,
        None => flag_tags,
    };
    let mut orgs = Vec::with_capacity(file.orgs.len());
    for (i, org) in file.orgs.into_iter().enumerate() {
        let key = format!("orgs[{i}]");
        if !is_atlas_id(&org.id) {
            return err(format!(
                "{key}.id: {:?} is not an Atlas org id (24 lowercase hex characters)",
                org.id
            ));
        }
        let credentials = match &org.credentials {
            Some(c) => env::file_credentials(&format!("{key}.credentials"), c, env)?,
            None => credentials_from_env(flags, env)?,
        };
        let queries = match org.queries {
            None => QuerySpec::defaults(flags.months),
            Some(qs) if qs.is_empty() => {
                return err(format!(
                    "{key}.queries: empty; leave it out for the default queries"
                ));
            }
            Some(qs) => {
                let mut out: Vec<QuerySpec> = Vec::with_capacity(qs.len());
                for (j, q) in qs.into_iter().enumerate() {
                    let q = file_query(&format!("{key}.queries[{j}]"), q, flags.months, &tags)?;
                    if out.iter().any(|o| o.name == q.name) {
                        return err(format!(
                            "{key}.queries[{j}].name: {:?} is used twice",
                            q.name
                        ));
                    }
                    out.push(q);
                }
                out
            }
        };
        if orgs.iter().any(|o: &OrgConfig| o.id == org.id) {
            return err(format!("{key}.id: {} is listed twice", org.id));
        }
        orgs.push(OrgConfig {
            id: org.id,
            credentials,
            queries,
            invoices: org.invoices.unwrap_or(flags.invoices_enabled),
        });
    }
    Ok((orgs, file.budgets, tags))
}
