//! Property tests of the cardinality controls (issue 20): random datasets (listed and
//! unlisted projects and clusters, project- and org-level charges, credits) and random
//! controls on the three default queries, run through the refresher's own steps: each
//! query's aggregation, its slot, and the publication that attaches the remainders
//! ([`super::attach_remainders`]), twice (the second time with the closed months from the
//! month cache).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use proptest::prelude::*;

use super::super::aggregate::{Window, aggregate};
use super::super::discovery::Discovery;
use super::super::month_cache::MonthSeries;
use super::{Role, attach_remainders};
use crate::atlas::result::UsageRow;
use crate::config::QuerySpec;
use crate::controls::{Controls, FileControls};
use crate::exposition::render_tagged;
use crate::month::Month;
use crate::refresher::Slot;
use crate::series::{Label, TagLabels};
use crate::snapshot::QueryStatus;

const ORG: &str = "0123456789abcdef01234567";
const CLUSTER_SERVICES: [&str; 3] = ["Clusters", "Backup", "Storage"];

/// A cluster: listed by discovery or not (deleted before the exporter saw it), and its
/// usage as (month index, service index, cents).
#[derive(Clone, Debug)]
struct Cluster {
    listed: bool,
    usage: Vec<(u32, usize, i64)>,
}

/// A project: listed or not, its project-level charges (`App Services`, by month index) and
/// its clusters.
#[derive(Clone, Debug)]
struct Project {
    listed: bool,
    charges: Vec<(u32, i64)>,
    clusters: Vec<Cluster>,
}

/// An org's spend over a window of `months` months ending in November 2026, seen on day
/// `day`: its projects, org-level `Support`, and `Credits` (negative, Atlas's own).
#[derive(Clone, Debug)]
struct Data {
    months: u32,
    day: u32,
    projects: Vec<Project>,
    support: Vec<(u32, i64)>,
    credits: Vec<(u32, i64)>,
}

fn cluster() -> impl Strategy<Value = Cluster> {
    (
        prop::bool::weighted(0.85),
        prop::collection::vec((0..4u32, 0..3usize, 0..60_000i64), 0..7),
    )
        .prop_map(|(listed, usage)| Cluster { listed, usage })
}

fn project() -> impl Strategy<Value = Project> {
    (
        prop::bool::weighted(0.85),
        prop::collection::vec((0..4u32, 0..8_000i64), 0..3),
        prop::collection::vec(cluster(), 0..4),
    )
        .prop_map(|(listed, charges, clusters)| Project {
            listed,
            charges,
            clusters,
        })
}

fn data() -> impl Strategy<Value = Data> {
    (
        1..=4u32,
        1..=30u32,
        prop::collection::vec(project(), 1..5),
        prop::collection::vec((0..4u32, 0..20_000i64), 0..3),
        prop::collection::vec((0..4u32, 1..40_000i64), 0..2),
    )
        .prop_map(|(months, day, projects, support, credits)| Data {
            months,
            day,
            projects,
            support,
            credits,
        })
}

/// Controls of one query, as YAML, with the project names they mention: `deny` on a
/// project's name, or `allow` on some; `min_usd`; `top`; `max_series` (some above the
/// query's months).
#[derive(Clone, Debug, Default)]
struct Knobs {
    deny: Option<usize>,
    allow: Option<Vec<usize>>,
    min_usd: Option<u32>,
    top: Option<usize>,
    max_over_months: Option<usize>,
    /// Services query only: `deny: {atlas_service: Backup}`.
    deny_backup: bool,
}

fn knobs() -> impl Strategy<Value = Knobs> {
    (
        prop::option::weighted(0.3, 0..5usize),
        prop::option::weighted(0.2, prop::collection::vec(0..5usize, 1..3)),
        prop::option::weighted(0.3, 0..400u32),
        prop::option::weighted(0.4, 1..4usize),
        prop::option::weighted(0.6, 0..25usize),
        prop::bool::weighted(0.3),
    )
        .prop_map(
            |(deny, allow, min_usd, top, max_over_months, deny_backup)| Knobs {
                deny,
                allow,
                min_usd,
                top,
                max_over_months,
                deny_backup,
            },
        )
}

fn project_name(p: usize) -> String {
    format!("project-{p}")
}

fn project_id(p: usize) -> String {
    format!("{:024x}", 0x100 + p)
}

fn cluster_id(p: usize, c: usize) -> String {
    format!("{:024x}", 0x10_000 + p * 16 + c)
}

impl Knobs {
    /// The YAML of these controls on a query grouped by projects or clusters (`grouped`),
    /// or by nothing (the services query: only its own knobs).
    fn yaml(&self, months: u32, grouped: bool) -> String {
        let mut parts = Vec::new();
        if grouped {
            if let Some(p) = self.deny {
                parts.push(format!("deny: {{project_name: '{}'}}", project_name(p)));
            }
            if let Some(ps) = &self.allow {
                let names: Vec<String> = ps.iter().map(|p| project_name(*p)).collect();
                parts.push(format!("allow: {{project_name: '{}'}}", names.join("|")));
            }
        } else if self.deny_backup {
            parts.push("deny: {atlas_service: Backup}".to_owned());
        }
        if let Some(m) = self.min_usd {
            parts.push(format!("min_usd: {m}"));
        }
        if let Some(n) = self.top {
            parts.push(format!("top: {n}"));
        }
        if let Some(extra) = self.max_over_months {
            parts.push(format!("max_series: {}", months as usize + extra));
        }
        format!("{{{}}}", parts.join(", "))
    }

    fn max_series(&self, months: u32) -> Option<usize> {
        self.max_over_months.map(|extra| months as usize + extra)
    }
}

/// A usage record: (month, project index, cluster index, service, cents).
type Record = (Month, Option<usize>, Option<usize>, &'static str, i64);

fn current() -> Month {
    Month::new(2026, 11).expect("month")
}

impl Data {
    fn month(&self, index: u32) -> Month {
        current().plus(-i64::from(index % self.months))
    }

    /// Every usage record.
    fn records(&self) -> Vec<Record> {
        let mut out = Vec::new();
        for (p, project) in self.projects.iter().enumerate() {
            for (m, cents) in &project.charges {
                out.push((self.month(*m), Some(p), None, "App Services", *cents));
            }
            for (c, cluster) in project.clusters.iter().enumerate() {
                for (m, s, cents) in &cluster.usage {
                    out.push((
                        self.month(*m),
                        Some(p),
                        Some(c),
                        CLUSTER_SERVICES[*s],
                        *cents,
                    ));
                }
            }
        }
        for (m, cents) in &self.support {
            out.push((self.month(*m), None, None, "Support", *cents));
        }
        for (m, cents) in &self.credits {
            out.push((self.month(*m), None, None, "Credits", -cents));
        }
        out
    }

    fn listed_cluster(&self, p: usize, c: usize) -> bool {
        self.projects[p].listed && self.projects[p].clusters[c].listed
    }

    /// What discovery lists: the listed projects and their listed clusters.
    fn discovery(&self) -> Discovery {
        let mut d = Discovery::default();
        for (p, project) in self.projects.iter().enumerate() {
            if !project.listed {
                continue;
            }
            d.project_ids.push(project_id(p));
            d.project_names.insert(project_id(p), project_name(p));
            for c in 0..project.clusters.len() {
                if self.listed_cluster(p, c) {
                    d.cluster_ids.push(cluster_id(p, c));
                    d.cluster_info.insert(
                        cluster_id(p, c),
                        (format!("cluster-{p}-{c}"), Some(project_id(p))),
                    );
                }
            }
        }
        d
    }

    /// The rows Atlas answers each default query with: every record for `services`, the
    /// listed projects' for `projects`, the listed clusters' for `clusters`.
    fn rows(&self) -> [Vec<UsageRow>; 3] {
        let mut out: [Vec<UsageRow>; 3] = Default::default();
        for (month, p, c, service, cents) in self.records() {
            let row = UsageRow {
                org_id: Some(Arc::from(ORG)),
                org_name: Some(Arc::from("Org")),
                project_id: None,
                project_name: None,
                cluster_id: None,
                cluster_name: None,
                service: Some(Arc::from(service)),
                month,
                amount_micros: cents * 10_000,
            };
            out[0].push(row.clone());
            if let Some(p) = p.filter(|p| self.projects[*p].listed) {
                out[1].push(UsageRow {
                    project_id: Some(Arc::from(project_id(p).as_str())),
                    ..row.clone()
                });
                if let Some(c) = c.filter(|c| self.listed_cluster(p, *c)) {
                    out[2].push(UsageRow {
                        cluster_id: Some(Arc::from(cluster_id(p, c).as_str())),
                        ..row
                    });
                }
            }
        }
        out
    }
}

/// The default queries of `data.months`, with `knobs` (services, projects, clusters).
fn specs(data: &Data, knobs: &[Knobs; 3]) -> Vec<QuerySpec> {
    let mut specs = QuerySpec::defaults(data.months);
    for (i, (spec, k)) in specs.iter_mut().zip(knobs).enumerate() {
        let file: FileControls =
            serde_norway::from_str(&k.yaml(data.months, i > 0)).expect("controls yaml");
        spec.controls = Controls::from_file("q", file, data.months, &TagLabels::default())
            .expect("valid controls");
    }
    specs
}

/// One refresh of the three queries and its publication: each query's slot with its
/// remainders attached, and the months each query read (for the month cache).
fn refresh(
    data: &Data,
    specs: &[QuerySpec],
    cached: Option<&[BTreeMap<Month, MonthSeries>]>,
) -> (Vec<Slot>, Vec<BTreeMap<Month, MonthSeries>>) {
    let discovery = data.discovery();
    let start = current().plus(1 - i64::from(data.months));
    let hot_from = start.max(current().plus(-1));
    let mut slots = Vec::new();
    let mut fetched = Vec::new();
    for (i, (spec, rows)) in specs.iter().zip(data.rows()).enumerate() {
        let (cached, fetch_from) = match cached {
            Some(c) => (
                c[i].range(..hot_from)
                    .map(|(m, s)| (*m, s.clone()))
                    .collect(),
                hot_from,
            ),
            None => (BTreeMap::new(), start),
        };
        let rows: Vec<UsageRow> = rows.into_iter().filter(|r| r.month >= fetch_from).collect();
        let window = Window {
            start,
            fetch_from,
            current: current(),
            day: data.day,
        };
        let a = aggregate(
            ORG,
            spec,
            &rows,
            &discovery,
            window,
            cached,
            &BTreeSet::new(),
        )
        .expect("aggregates");
        fetched.push(a.fetched);
        slots.push(Slot {
            status: QueryStatus::pending(&spec.name, ORG),
            series: Arc::new(render_tagged(a.series, &TagLabels::default())),
            rollup: Some(Arc::new(a.rollup)),
            remainder: Arc::new(Vec::new()),
            uncontrolled: a.uncontrolled.map(Arc::new),
            remainders_included: false,
            shed: a.shed,
            text: None,
        });
    }
    let roles: Vec<Role> = specs.iter().map(Role::of).collect();
    attach_remainders(ORG, &roles, &mut slots, &TagLabels::default());
    (slots, fetched)
}

/// (label text, month, micros) of everything a slot serves.
fn served(slot: &Slot) -> BTreeSet<(String, Month, i64)> {
    slot.all_series()
        .iter()
        .map(|r| (r.labels.to_string(), r.series.month, r.series.micros))
        .collect()
}

/// The sum of each month of what a slot serves.
fn month_sums(slot: &Slot) -> BTreeMap<Month, i64> {
    let mut out = BTreeMap::new();
    for r in slot.all_series() {
        *out.entry(r.series.month).or_insert(0) += r.series.micros;
    }
    out.retain(|_, v| *v != 0);
    out
}

/// The ids (`label`) that a slot serves as their own series in `month`.
fn own_series(slot: &Slot, label: Label, month: Month) -> BTreeSet<String> {
    slot.all_series()
        .iter()
        .filter(|r| r.series.month == month)
        .filter_map(|r| r.series.key.get(label).map(str::to_owned))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Whatever the data and the controls: each query serves at most its `max_series`
    /// (remainders included); `projects` and `clusters` add up to the `services` total of
    /// every month, to the micro-dollar; a project denied (or not allowed) on `clusters` has
    /// no series there; nothing is negative but Atlas's credits; an entity kept in the
    /// previous month is not folded in the current one; and a second refresh of the same
    /// data, its closed months from the cache, serves exactly the same series.
    #[test]
    fn controls_keep_their_promises(data in data(), knobs in [knobs(), knobs(), knobs()]) {
        let specs = specs(&data, &knobs);
        let (slots, fetched) = refresh(&data, &specs, None);

        for (slot, k) in slots.iter().zip(&knobs) {
            if let Some(max) = k.max_series(data.months) {
                prop_assert!(slot.all_series().len() <= max,
                    "{}: {} series over max_series {max}", slot.status.query, slot.all_series().len());
            }
        }

        let total = month_sums(&slots[0]);
        let mut atlas: BTreeMap<Month, i64> = BTreeMap::new();
        for (m, _, _, _, cents) in data.records() {
            *atlas.entry(m).or_insert(0) += cents * 10_000;
        }
        atlas.retain(|_, v| *v != 0);
        prop_assert_eq!(&total, &atlas, "services against Atlas");
        for slot in &slots[1..] {
            prop_assert_eq!(&month_sums(slot), &total, "{} by month", slot.status.query);
        }

        let clusters = &slots[2];
        let names: BTreeSet<String> = clusters
            .all_series()
            .iter()
            .filter_map(|r| r.series.key.get(Label::ProjectName).map(str::to_owned))
            .collect();
        if let Some(p) = knobs[2].deny {
            prop_assert!(!names.contains(&project_name(p)), "denied {p} in {names:?}");
        }
        if let Some(allowed) = &knobs[2].allow {
            for name in &names {
                prop_assert!(name == "(other)" || allowed.iter().any(|p| project_name(*p) == *name),
                    "{name} is not allowed");
            }
        }

        let mut credits: BTreeMap<Month, i64> = BTreeMap::new();
        for (m, _, _, service, cents) in data.records() {
            if service == "Credits" {
                *credits.entry(m).or_insert(0) += cents * 10_000;
            }
        }
        for slot in &slots {
            for r in slot.all_series() {
                let s = &r.series;
                let service = s.key.get(Label::AtlasService);
                let floor = credits.get(&s.month).copied().unwrap_or(0);
                // A folded series (no service, or the service `(other)`) may hold credits.
                let folded = service.is_none_or(|s| s == "(other)");
                prop_assert!(s.micros >= 0 || service == Some("Credits")
                    || (folded && s.micros >= floor),
                    "negative without credits: {} {} = {}", r.labels, s.month, s.micros);
            }
        }

        if data.months > 1 {
            let previous = current().plus(-1);
            let billed = |label: Label, rows: &[UsageRow]| -> BTreeSet<String> {
                rows.iter()
                    .filter(|r| r.month == current())
                    .filter_map(|r| match label {
                        Label::ProjectId => r.project_id.as_deref().map(str::to_owned),
                        _ => r.cluster_id.as_deref().map(str::to_owned),
                    })
                    .collect()
            };
            let rows = data.rows();
            for (slot, label, rows) in [
                (&slots[1], Label::ProjectId, &rows[1]),
                (&slots[2], Label::ClusterId, &rows[2]),
            ] {
                let kept_before = own_series(slot, label, previous);
                let kept_now = own_series(slot, label, current());
                for id in kept_before.intersection(&billed(label, rows)) {
                    prop_assert!(kept_now.contains(id),
                        "{}: {id} kept in {previous}, folded in {}", slot.status.query, current());
                }
            }
        }

        let (again, _) = refresh(&data, &specs, Some(&fetched));
        for (first, second) in slots.iter().zip(&again) {
            prop_assert_eq!(served(first), served(second), "{} twice", first.status.query);
        }
    }
}
