//! Month-end forecasts and monthly budgets, computed once per published refresh.
//!
//! The forecast of a series scales its month-to-date by the days of the month over the days
//! of data Atlas has posted ([`forecast_micros`]). A [`Budget`] sums the month-to-date of the
//! series of one query that match its scope, and is exported with its consumed and forecast
//! ratios, so alert rules compare spend to budgets without hard-coded numbers.
//!
//! A scope may name tag labels (`tag_team`, issue 11) of the allowlist: such a budget reads
//! the `clusters` query, whose per-project remainders carry the project's tags, so
//! project-level spend counts too.
//!
//! Everything here is encoded into the pre-built part of the exposition
//! ([`encode_budgets`]): nothing is computed per scrape.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use regex::Regex;
use serde::Deserialize;

use crate::chart::MonthlySpend;
use crate::exposition::text::family_header;
use crate::exposition::{RenderedSeries, push_label, push_micros};
use crate::model::{AtlasId, ConfigError, GroupBy, usd_to_micros};
use crate::month::Month;
use crate::series::{CostSeries, KeyLabel, Label, TagLabels};
use crate::snapshot::OrgSummary;

pub use crate::month::{days_elapsed, forecast_micros};

/// A monthly budget over the cost series of one query.
#[derive(Clone, Debug)]
pub struct Budget {
    /// The `budget` label value.
    pub name: String,
    /// Amount per month, micro-dollars (> 0).
    pub amount_micros: i64,
    /// The `query` label of the series it sums.
    pub query: String,
    /// Exact `label = value` pairs a series must carry; exported as labels of the budget
    /// (cost labels in their order, then tag labels in allowlist order).
    pub scope: Vec<(KeyLabel, String)>,
    /// Anchored regexes over label values (an absent label reads as ""), as in PromQL.
    pub matchers: Vec<(KeyLabel, Regex)>,
    /// `budget="..."` and the scope's labels, rendered once.
    labels: String,
}

/// A budget as written in the YAML file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileBudget {
    name: String,
    amount_usd: f64,
    #[serde(default)]
    query: Option<String>,
    scope: FileScope,
}

/// The scope of a budget in the YAML file: exact label values and label matchers. Any other
/// key must be a configured tag label (checked by [`validate`]: serde cannot refuse unknown
/// keys beside a flattened map).
#[derive(Debug, Default, Deserialize)]
struct FileScope {
    org_id: Option<String>,
    org_name: Option<String>,
    project_id: Option<String>,
    project_name: Option<String>,
    cluster_id: Option<String>,
    cluster_name: Option<String>,
    atlas_service: Option<String>,
    #[serde(default, rename = "match")]
    matchers: BTreeMap<String, String>,
    /// Tag labels (`tag_team: web`), and whatever else was written.
    #[serde(flatten)]
    others: BTreeMap<String, String>,
}

impl FileScope {
    fn exact(&self) -> Vec<(Label, String)> {
        Label::ALL
            .into_iter()
            .zip([
                &self.org_id,
                &self.org_name,
                &self.project_id,
                &self.project_name,
                &self.cluster_id,
                &self.cluster_name,
                &self.atlas_service,
            ])
            .filter_map(|(k, v)| v.as_ref().map(|v| (k, v.clone())))
            .collect()
    }
}

/// The error for a scope key `name` that is no label a budget can name.
fn unknown_scope_label(
    key: &str,
    name: &str,
    under: &str,
    budget: &str,
    tags: &TagLabels,
) -> String {
    let mut names: Vec<&str> = Label::ALL.iter().map(|l| l.as_str()).collect();
    names.extend(tags.names().iter().map(String::as_str));
    let hint = if name.starts_with("tag_") {
        " (a tag label must be in --cost.tag-labels or tag_labels)"
    } else {
        ""
    };
    format!(
        "{key}.scope.{under}{name}: budget {budget:?} names {name}, not a cost label (one of {}){hint}",
        names.join(", ")
    )
}

fn is_budget_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// The query a budget reads by default: the least detailed default query that carries every
/// label of its scope (`clusters` for cluster and tag labels: its remainders make a tag's
/// spend complete; `projects` for project labels, `services` otherwise: the only one that
/// holds org-level charges).
fn default_query(labels: &[KeyLabel]) -> &'static str {
    if labels.iter().any(|l| {
        matches!(
            l,
            KeyLabel::Cost(Label::ClusterId | Label::ClusterName) | KeyLabel::Tag(_)
        )
    }) {
        GroupBy::Clusters.as_str()
    } else if labels
        .iter()
        .any(|l| matches!(l, KeyLabel::Cost(Label::ProjectId | Label::ProjectName)))
    {
        GroupBy::Projects.as_str()
    } else {
        "services"
    }
}

/// An org as budgets see it: its id and the names of its queries.
#[derive(Clone, Copy, Debug)]
pub struct OrgQueries<'a> {
    /// The org id.
    pub id: &'a str,
    /// Its queries' names.
    pub queries: &'a [&'a str],
}

/// Validates the budgets of the YAML file against the orgs and their queries; scopes may
/// name the tag labels of `tags` (none without `--cost.tag-labels`).
///
/// # Errors
/// A [`ConfigError`] naming the key, e.g. `budgets[0].amount_usd: ...`; a `tag_*` label not
/// in `tags` names the budget and the label.
pub fn validate(
    file: Vec<FileBudget>,
    orgs: &[OrgQueries<'_>],
    tags: &TagLabels,
) -> Result<Vec<Budget>, ConfigError> {
    let mut out: Vec<Budget> = Vec::with_capacity(file.len());
    for (i, b) in file.into_iter().enumerate() {
        let key = format!("budgets[{i}]");
        let fail = |msg: String| Err(ConfigError(msg));
        if !is_budget_name(&b.name) {
            return fail(format!(
                "{key}.name: {:?} must be 1 to 64 letters, digits, '_', '-' or '.'",
                b.name
            ));
        }
        if out.iter().any(|o| o.name == b.name) {
            return fail(format!("{key}.name: {:?} is used twice", b.name));
        }
        let Some(amount_micros) = usd_to_micros(b.amount_usd).filter(|_| b.amount_usd > 0.0) else {
            return fail(format!(
                "{key}.amount_usd: {} must be a positive number of USD per month",
                b.amount_usd
            ));
        };
        if amount_micros <= 0 {
            return fail(format!(
                "{key}.amount_usd: {} is below a micro-dollar",
                b.amount_usd
            ));
        }
        let mut scope: Vec<(KeyLabel, String)> = b
            .scope
            .exact()
            .into_iter()
            .map(|(l, v)| (KeyLabel::Cost(l), v))
            .collect();
        let mut tagged: Vec<(usize, String)> = Vec::with_capacity(b.scope.others.len());
        for (name, value) in &b.scope.others {
            match tags.position(name) {
                Some(i) => tagged.push((i, value.clone())),
                None => return fail(unknown_scope_label(&key, name, "", &b.name, tags)),
            }
        }
        tagged.sort_unstable_by_key(|(i, _)| *i);
        scope.extend(tagged.into_iter().map(|(i, v)| (KeyLabel::Tag(i), v)));
        if let Some((k, v)) = scope.iter().find(|(_, v)| v.is_empty()) {
            return fail(format!("{key}.scope.{}: {v:?} is empty", tags.name_of(*k)));
        }
        if let Some(org) = b
            .scope
            .org_id
            .as_ref()
            .filter(|o| AtlasId::parse(o).is_none())
        {
            return fail(format!(
                "{key}.scope.org_id: {org:?} is not an Atlas org id (24 lowercase hex characters)"
            ));
        }
        let mut matchers = Vec::with_capacity(b.scope.matchers.len());
        for (name, pattern) in &b.scope.matchers {
            let Some(label) = tags.key_label(name) else {
                return fail(unknown_scope_label(&key, name, "match.", &b.name, tags));
            };
            let re = Regex::new(&format!("^(?:{pattern})$")).map_err(|e| {
                ConfigError(format!(
                    "{key}.scope.match.{name}: {pattern:?} is not a regex: {}",
                    e.to_string().replace('\n', " ")
                ))
            })?;
            matchers.push((label, re));
        }
        if scope.is_empty() && matchers.is_empty() {
            return fail(format!(
                "{key}.scope: empty; give org_id, project_name, cluster_name, atlas_service... or match"
            ));
        }
        let labels: Vec<KeyLabel> = scope
            .iter()
            .map(|(k, _)| *k)
            .chain(matchers.iter().map(|(k, _)| *k))
            .collect();
        let query = b.query.unwrap_or_else(|| default_query(&labels).to_owned());
        let has_query = orgs
            .iter()
            .filter(|o| b.scope.org_id.as_ref().is_none_or(|id| id == o.id))
            .any(|o| o.queries.contains(&query.as_str()));
        if !has_query {
            return fail(format!(
                "{key}.query: no org in scope has a query named {query:?} (the default for this scope; name one with query:)"
            ));
        }
        let mut rendered = String::new();
        push_label(&mut rendered, "budget", &b.name);
        for (k, v) in &scope {
            push_label(&mut rendered, tags.name_of(*k), v);
        }
        out.push(Budget {
            name: b.name,
            amount_micros,
            query,
            scope,
            matchers,
            labels: rendered,
        });
    }
    Ok(out)
}

impl Budget {
    /// Whether `s` is one of the series this budget sums.
    fn matches(&self, s: &CostSeries) -> bool {
        // An absent label reads as "", as in PromQL.
        let get = |label: KeyLabel| s.key.value(label).unwrap_or("");
        *s.query == *self.query
            && self.scope.iter().all(|(k, v)| get(*k) == v)
            && self.matchers.iter().all(|(k, re)| re.is_match(get(*k)))
    }

    /// `budget="..."` and the scope's labels, as the budget gauges carry them.
    pub fn labels(&self) -> &str {
        &self.labels
    }
}

fn push_ratio(out: &mut String, name: &str, labels: &str, micros: i64, budget: i64) {
    #[allow(clippy::cast_precision_loss)]
    let ratio = micros as f64 / budget as f64;
    let _ = writeln!(out, "{name}{{{labels}}} {ratio}");
}

/// The `# HELP` and `# TYPE` lines of `atlas_cost_month_forecast_usd`.
pub fn forecast_header(out: &mut String) {
    family_header(
        out,
        "atlas_cost_month_forecast_usd",
        "Forecast of the current UTC month's total in USD: month to date * days in month / days of data (day of month - 1, at least 1: Atlas posts a day late)",
    );
}

/// The month-end forecast of each series of `current`, on day `day`.
pub fn forecast_lines(out: &mut String, series: &[&RenderedSeries], current: Month, day: u32) {
    for s in series.iter().filter(|s| s.series.month == current) {
        let _ = write!(out, "atlas_cost_month_forecast_usd{{{}}} ", s.labels);
        push_micros(out, forecast_micros(s.series.micros, current, day));
        out.push('\n');
    }
}

/// The `# HELP` and `# TYPE` lines of `atlas_cost_previous_month_usd`.
pub fn previous_header(out: &mut String) {
    family_header(
        out,
        "atlas_cost_previous_month_usd",
        "Usage of the previous UTC month in USD, with the labels of atlas_cost_month_to_date_usd (absent when --cost.months is 1)",
    );
}

/// The usage of the month before `current` of each series, with its month-to-date labels.
pub fn previous_lines(out: &mut String, series: &[&RenderedSeries], current: Month) {
    let previous = current.plus(-1);
    for s in series.iter().filter(|s| s.series.month == previous) {
        let _ = write!(out, "atlas_cost_previous_month_usd{{{}}} ", s.labels);
        push_micros(out, s.series.micros);
        out.push('\n');
    }
}

/// Each budget with its ratios over the month-to-date of `series`, and the refresh interval:
/// the families after the per-series ones.
pub fn encode_budgets(
    out: &mut String,
    series: &[&RenderedSeries],
    current: Month,
    day: u32,
    budgets: &[Budget],
    refresh_interval_secs: u64,
) {
    let evaluated: Vec<(&str, &Budget, Option<i64>)> = budgets
        .iter()
        .map(|b| {
            let matched: Vec<i64> = series
                .iter()
                .map(|s| &s.series)
                .filter(|s| s.month == current && b.matches(s))
                .map(|s| s.micros)
                .collect();
            let mtd = (!matched.is_empty())
                .then(|| matched.iter().fold(0i64, |a, m| a.saturating_add(*m)));
            (b.labels(), b, mtd)
        })
        .collect();
    family_header(
        out,
        "atlas_cost_budget_usd",
        "Monthly budget in USD from the configuration file, labelled with its name and scope",
    );
    for (labels, b, _) in &evaluated {
        let _ = write!(out, "atlas_cost_budget_usd{{{labels}}} ");
        push_micros(out, b.amount_micros);
        out.push('\n');
    }
    family_header(
        out,
        "atlas_cost_budget_consumed_ratio",
        "Month to date of the budget's series over the budget (1 = all spent); absent while no series matches",
    );
    for (labels, b, mtd) in &evaluated {
        if let Some(mtd) = mtd {
            push_ratio(
                out,
                "atlas_cost_budget_consumed_ratio",
                labels,
                *mtd,
                b.amount_micros,
            );
        }
    }
    family_header(
        out,
        "atlas_cost_budget_forecast_ratio",
        "Month-end forecast of the budget's series over the budget (over 1 = on course to exceed it); absent while no series matches",
    );
    for (labels, b, mtd) in &evaluated {
        if let Some(mtd) = mtd {
            push_ratio(
                out,
                "atlas_cost_budget_forecast_ratio",
                labels,
                forecast_micros(*mtd, current, day),
                b.amount_micros,
            );
        }
    }
    family_header(
        out,
        "atlas_cost_refresh_interval_seconds",
        "The configured --refresh.interval, for staleness alerts",
    );
    let _ = writeln!(
        out,
        "atlas_cost_refresh_interval_seconds {refresh_interval_secs}"
    );
}

/// The landing page's summary of each org in `org_ids`: the `org_name`, month to date and
/// forecast of its `services` series (the org's total by service) for `current`, on day
/// `day`, and the chart of its monthly spend by service over every month of those series
/// ([`crate::chart`]). Computed once per published refresh, like the budgets.
pub fn org_summaries<'a>(
    org_ids: impl Iterator<Item = &'a str>,
    series: &[&RenderedSeries],
    current: Month,
    day: u32,
) -> Vec<OrgSummary> {
    let mut orgs: Vec<(OrgSummary, MonthlySpend)> = org_ids
        .map(|id| {
            (
                OrgSummary {
                    org_id: id.to_owned(),
                    org_name: None,
                    month: current,
                    month_to_date_micros: None,
                    forecast_micros: None,
                    spend_chart: String::new(),
                },
                MonthlySpend::new(),
            )
        })
        .collect();
    // In the order the series are exposed: the first `org_name` there is the one shown.
    for s in series
        .iter()
        .map(|s| &s.series)
        .filter(|s| &*s.query == "services")
    {
        let Some((org, spend)) = s
            .key
            .get(Label::OrgId)
            .and_then(|id| orgs.iter_mut().find(|(o, _)| o.org_id == id))
        else {
            continue;
        };
        let service = s.key.get(Label::AtlasService).unwrap_or("(no service)");
        let cell = spend
            .entry(s.month)
            .or_default()
            .entry(service.to_owned())
            .or_default();
        *cell = cell.saturating_add(s.micros);
        if s.month != current {
            continue;
        }
        if org.org_name.is_none() {
            org.org_name = s.key.get(Label::OrgName).map(str::to_owned);
        }
        org.month_to_date_micros = Some(
            org.month_to_date_micros
                .unwrap_or(0)
                .saturating_add(s.micros),
        );
    }
    orgs.into_iter()
        .map(|(mut org, spend)| {
            org.forecast_micros = org
                .month_to_date_micros
                .map(|mtd| forecast_micros(mtd, current, day));
            let title = match &org.org_name {
                Some(name) => format!("{name} ({})", org.org_id),
                None => org.org_id.clone(),
            };
            org.spend_chart = crate::chart::spend_chart(&title, &spend);
            org
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The families this module writes, in the order a publication writes them (the
    /// refresher interleaves them with other queries' pieces): forecast, previous month,
    /// budgets and the refresh interval.
    fn encode(
        out: &mut String,
        series: &[&RenderedSeries],
        current: Month,
        day: u32,
        budgets: &[Budget],
        refresh_interval_secs: u64,
    ) {
        forecast_header(out);
        forecast_lines(out, series, current, day);
        previous_header(out);
        previous_lines(out, series, current);
        encode_budgets(out, series, current, day, budgets, refresh_interval_secs);
    }

    const ORG: &str = "5f1b2c3d4e5f6a7b8c9d0e1f";

    fn month(y: i32, m: u32) -> Month {
        Month::new(y, m).expect("valid month")
    }

    fn orgs() -> Vec<OrgQueries<'static>> {
        vec![OrgQueries {
            id: ORG,
            queries: &["services", "projects", "clusters"],
        }]
    }

    fn parse(yaml: &str) -> Result<Vec<Budget>, String> {
        let file: Vec<FileBudget> = serde_norway::from_str(yaml).map_err(|e| e.to_string())?;
        validate(file, &orgs(), &TagLabels::default()).map_err(|e| e.to_string())
    }

    /// On the 1st nothing of the month is posted: one day counts as elapsed, so the forecast
    /// is the month-to-date times the days of the month (and 0 stays 0).
    #[test]
    fn forecast_on_the_first_day_counts_one_day() {
        assert_eq!(days_elapsed(1), 1);
        assert_eq!(forecast_micros(0, month(2026, 11), 1), 0);
        assert_eq!(forecast_micros(2_000_000, month(2026, 11), 1), 60_000_000);
        // The 2nd also has one day of data (the 1st, posted today).
        assert_eq!(forecast_micros(2_000_000, month(2026, 11), 2), 60_000_000);
    }

    /// On the last day, data runs through the day before: 31 days over 30 in December.
    #[test]
    fn forecast_on_the_last_day_scales_by_one_missing_day() {
        assert_eq!(days_elapsed(31), 30);
        assert_eq!(
            forecast_micros(300_000_000, month(2026, 12), 31),
            310_000_000
        );
    }

    /// February has 28 days, or 29 in a leap year; mid-month scales accordingly.
    #[test]
    fn forecast_in_february_knows_leap_years() {
        // 2027-02-15: 14 days of data, 28 days in the month.
        assert_eq!(
            forecast_micros(140_000_000, month(2027, 2), 15),
            280_000_000
        );
        // 2028-02-15: 29 days.
        assert_eq!(
            forecast_micros(140_000_000, month(2028, 2), 15),
            290_000_000
        );
        // Last day of a leap February: 28 days of data.
        assert_eq!(
            forecast_micros(280_000_000, month(2028, 2), 29),
            290_000_000
        );
    }

    /// Negative amounts (credits) forecast symmetrically, rounded toward zero to the micro.
    #[test]
    fn forecast_keeps_micro_precision_and_sign() {
        assert_eq!(forecast_micros(-10, month(2026, 11), 4), -100);
        assert_eq!(forecast_micros(1, month(2026, 11), 8), 4); // 30/7 = 4.28...
        assert_eq!(forecast_micros(i64::MAX, month(2026, 11), 1), i64::MAX);
    }

    /// The default query follows the most detailed label of the scope; `query:` overrides it.
    #[test]
    fn budgets_default_to_the_query_that_carries_their_labels() {
        let b = parse(&format!(
            "- {{name: org, amount_usd: 100, scope: {{org_id: {ORG}}}}}\n\
             - {{name: proj, amount_usd: 100, scope: {{project_name: web}}}}\n\
             - {{name: clu, amount_usd: 100.5, scope: {{match: {{cluster_name: 'prod-.*'}}}}}}\n\
             - {{name: svc, amount_usd: 1, query: projects, scope: {{atlas_service: Storage}}}}\n"
        ))
        .expect("valid");
        let q: Vec<_> = b.iter().map(|b| b.query.as_str()).collect();
        assert_eq!(q, ["services", "projects", "clusters", "projects"]);
        assert_eq!(b[2].amount_micros, 100_500_000);
    }

    /// Invalid budgets are refused with the key that is wrong.
    #[test]
    fn invalid_budgets_name_the_key() {
        for (yaml, key) in [
            (
                "- {name: 'a b', amount_usd: 1, scope: {atlas_service: x}}",
                "budgets[0].name:",
            ),
            (
                "- {name: a, amount_usd: 0, scope: {atlas_service: x}}",
                "budgets[0].amount_usd:",
            ),
            (
                "- {name: a, amount_usd: -5, scope: {atlas_service: x}}",
                "budgets[0].amount_usd:",
            ),
            (
                "- {name: a, amount_usd: .nan, scope: {atlas_service: x}}",
                "budgets[0].amount_usd:",
            ),
            ("- {name: a, amount_usd: 1, scope: {}}", "budgets[0].scope:"),
            (
                "- {name: a, amount_usd: 1, scope: {org_id: nothex}}",
                "budgets[0].scope.org_id:",
            ),
            (
                "- {name: a, amount_usd: 1, scope: {match: {cluster_name: '('}}}",
                "budgets[0].scope.match.cluster_name:",
            ),
            (
                "- {name: a, amount_usd: 1, scope: {match: {month: '.*'}}}",
                "budgets[0].scope.match.month:",
            ),
            (
                "- {name: a, amount_usd: 1, query: nope, scope: {atlas_service: x}}",
                "budgets[0].query:",
            ),
            (
                "- {name: a, amount_usd: 1, scope: {atlas_service: x}}\n- {name: a, amount_usd: 1, scope: {atlas_service: y}}",
                "budgets[1].name:",
            ),
            (
                "- {name: a, amount_usd: 1, scope: {project_name: ''}}",
                "budgets[0].scope.project_name:",
            ),
        ] {
            let msg = parse(yaml).expect_err(yaml);
            assert!(msg.starts_with(key), "{yaml}: {msg}");
        }
        let unknown =
            parse("- {name: a, amount_usd: 1, scope: {cluster: x}}").expect_err("unknown key");
        assert!(unknown.contains("cluster"), "{unknown}");
    }

    /// A rendered series from `(label name, value)` pairs, `query` among them.
    fn series(labels: &[(&str, &str)], month: Month, micros: i64) -> RenderedSeries {
        let mut key = crate::series::SeriesKey::default();
        let mut query = "";
        for (name, value) in labels {
            match Label::from_name(name) {
                Some(label) => key.set(label, Some(value)),
                None => query = value,
            }
        }
        RenderedSeries::new(
            CostSeries {
                query: query.into(),
                key,
                month,
                micros,
            },
            &TagLabels::default(),
        )
    }

    /// A budget sums the current month of its query's matching series only, and its ratios
    /// and the forecasts print exactly; a budget that matches nothing has no ratios.
    #[test]
    fn budgets_and_forecasts_encode_exactly() {
        let nov = month(2026, 11);
        let s = [
            series(
                &[
                    ("query", "clusters"),
                    ("org_id", ORG),
                    ("cluster_name", "prod-a"),
                    ("atlas_service", "Clusters"),
                ],
                nov,
                30_000_000,
            ),
            series(
                &[
                    ("query", "clusters"),
                    ("org_id", ORG),
                    ("cluster_name", "prod-b"),
                    ("atlas_service", "Backup"),
                ],
                nov,
                10_000_000,
            ),
            series(
                &[
                    ("query", "clusters"),
                    ("org_id", ORG),
                    ("cluster_name", "dev"),
                    ("atlas_service", "Clusters"),
                ],
                nov,
                5_000_000,
            ),
            series(
                &[
                    ("query", "services"),
                    ("org_id", ORG),
                    ("atlas_service", "Clusters"),
                ],
                nov,
                99_000_000,
            ),
            series(
                &[
                    ("query", "clusters"),
                    ("org_id", ORG),
                    ("cluster_name", "prod-a"),
                    ("atlas_service", "Clusters"),
                ],
                nov.plus(-1),
                70_000_000,
            ),
        ];
        let refs: Vec<&RenderedSeries> = s.iter().collect();
        let budgets = parse(&format!(
            "- {{name: prod, amount_usd: 80, scope: {{org_id: {ORG}, match: {{cluster_name: 'prod-.*'}}}}}}\n\
             - {{name: none, amount_usd: 5, scope: {{cluster_name: gone}}}}\n"
        ))
        .expect("valid");
        let mut out = String::new();
        // 2026-11-11: 10 days of data, 30 days in November.
        encode(&mut out, &refs, nov, 11, &budgets, 3600);
        let lines: Vec<&str> = out.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            lines,
            [
                format!(
                    r#"atlas_cost_month_forecast_usd{{query="clusters",org_id="{ORG}",cluster_name="prod-a",atlas_service="Clusters"}} 90"#
                ),
                format!(
                    r#"atlas_cost_month_forecast_usd{{query="clusters",org_id="{ORG}",cluster_name="prod-b",atlas_service="Backup"}} 30"#
                ),
                format!(
                    r#"atlas_cost_month_forecast_usd{{query="clusters",org_id="{ORG}",cluster_name="dev",atlas_service="Clusters"}} 15"#
                ),
                format!(
                    r#"atlas_cost_month_forecast_usd{{query="services",org_id="{ORG}",atlas_service="Clusters"}} 297"#
                ),
                format!(
                    r#"atlas_cost_previous_month_usd{{query="clusters",org_id="{ORG}",cluster_name="prod-a",atlas_service="Clusters"}} 70"#
                ),
                format!(r#"atlas_cost_budget_usd{{budget="prod",org_id="{ORG}"}} 80"#),
                r#"atlas_cost_budget_usd{budget="none",cluster_name="gone"} 5"#.to_owned(),
                format!(r#"atlas_cost_budget_consumed_ratio{{budget="prod",org_id="{ORG}"}} 0.5"#),
                format!(r#"atlas_cost_budget_forecast_ratio{{budget="prod",org_id="{ORG}"}} 1.5"#),
                "atlas_cost_refresh_interval_seconds 3600".to_owned(),
            ]
        );
    }

    /// A scope naming a tag label reads the `clusters` query by default and sums the series
    /// carrying that tag; its gauges carry the tag label after the other scope labels. A tag
    /// label the allowlist lacks stops start-up, naming the budget and the label.
    #[test]
    fn budgets_scoped_by_a_tag_label_read_the_clusters_query() {
        let tags = TagLabels::new("--cost.tag-labels", ["team", "env"]).expect("valid");
        let parse_tagged = |yaml: &str| {
            let file: Vec<FileBudget> = serde_norway::from_str(yaml).expect("yaml");
            validate(file, &orgs(), &tags).map_err(|e| e.to_string())
        };
        let budgets = parse_tagged(&format!(
            "- {{name: web, amount_usd: 10, scope: {{tag_team: web, org_id: {ORG}}}}}\n\
             - {{name: prod, amount_usd: 10, query: projects, scope: {{match: {{tag_env: 'prod|staging'}}}}}}\n"
        ))
        .expect("valid");
        assert_eq!(budgets[0].query, "clusters");
        assert_eq!(budgets[1].query, "projects");
        assert_eq!(
            budgets[0].labels(),
            format!(r#"budget="web",org_id="{ORG}",tag_team="web""#)
        );
        let nov = month(2026, 11);
        let tagged = |team: Option<&str>, micros: i64| {
            let mut key = crate::series::SeriesKey::default();
            key.set(Label::OrgId, Some(ORG));
            key.set_tags(tags.values(team.map(|t| ("team", t))));
            RenderedSeries::new(
                CostSeries {
                    query: "clusters".into(),
                    key,
                    month: nov,
                    micros,
                },
                &tags,
            )
        };
        let s = [
            tagged(Some("web"), 3_000_000),
            tagged(Some("data"), 7_000_000),
            tagged(None, 1_000_000),
            tagged(Some("web"), 2_000_000),
        ];
        let refs: Vec<&RenderedSeries> = s.iter().collect();
        let mut out = String::new();
        encode(&mut out, &refs, nov, 11, &budgets[..1], 3600);
        assert!(
            out.contains(&format!(
                "atlas_cost_budget_consumed_ratio{{budget=\"web\",org_id=\"{ORG}\",tag_team=\"web\"}} 0.5\n"
            )),
            "{out}"
        );
        let e = parse_tagged("- {name: own, amount_usd: 1, scope: {tag_owner: x}}")
            .expect_err("not allowlisted");
        assert!(
            e.starts_with("budgets[0].scope.tag_owner: budget \"own\" names tag_owner"),
            "{e}"
        );
        let e = parse_tagged("- {name: own, amount_usd: 1, scope: {match: {tag_owner: x}}}")
            .expect_err("not allowlisted");
        assert!(e.starts_with("budgets[0].scope.match.tag_owner:"), "{e}");
        // Without tag labels, tag_team is no label either.
        assert!(parse("- {name: t, amount_usd: 1, scope: {tag_team: web}}").is_err());
    }

    /// The landing page's summary sums the current month of each org's `services` series
    /// only, takes its org name from them, forecasts the sum, charts every month of them by
    /// service, and leaves an org without such series empty.
    #[test]
    fn org_summaries_sum_the_services_query_of_the_month() {
        const OTHER: &str = "0123456789abcdef01234567";
        let nov = month(2026, 11);
        let svc = |org: &str, service: &str, m: Month, micros: i64| {
            series(
                &[
                    ("query", "services"),
                    ("org_id", org),
                    ("org_name", "A <b>&\"c\""),
                    ("atlas_service", service),
                ],
                m,
                micros,
            )
        };
        let s = [
            svc(ORG, "Clusters", nov, 30_000_000),
            svc(ORG, "Backup", nov, 10_000_000),
            svc(ORG, "Clusters", nov.plus(-1), 70_000_000),
            series(
                &[
                    ("query", "clusters"),
                    ("org_id", ORG),
                    ("cluster_name", "a"),
                ],
                nov,
                5_000_000,
            ),
            // Not an org of this replica.
            svc("ffffffffffffffffffffffff", "Clusters", nov, 1),
        ];
        let refs: Vec<&RenderedSeries> = s.iter().collect();
        let got = org_summaries([ORG, OTHER].into_iter(), &refs, nov, 11);
        let mut spend = crate::chart::MonthlySpend::new();
        spend
            .entry(nov.plus(-1))
            .or_default()
            .insert("Clusters".to_owned(), 70_000_000);
        let nov_spend = spend.entry(nov).or_default();
        nov_spend.insert("Clusters".to_owned(), 30_000_000);
        nov_spend.insert("Backup".to_owned(), 10_000_000);
        assert_eq!(
            got,
            [
                OrgSummary {
                    org_id: ORG.to_owned(),
                    org_name: Some("A <b>&\"c\"".to_owned()),
                    month: nov,
                    month_to_date_micros: Some(40_000_000),
                    forecast_micros: Some(120_000_000),
                    // Every month of the `services` series, not the `clusters` query's.
                    spend_chart: crate::chart::spend_chart(&format!("A <b>&\"c\" ({ORG})"), &spend),
                },
                OrgSummary {
                    org_id: OTHER.to_owned(),
                    org_name: None,
                    month: nov,
                    month_to_date_micros: None,
                    forecast_micros: None,
                    spend_chart: crate::chart::spend_chart(
                        OTHER,
                        &crate::chart::MonthlySpend::new()
                    ),
                },
            ]
        );
        assert!(
            got[0]
                .spend_chart
                .contains("data-month=\"2026-10\" data-net-usd=\"70.00\"")
        );
        assert!(
            got[0]
                .spend_chart
                .contains("data-month=\"2026-11\" data-net-usd=\"40.00\"")
        );
    }
}
