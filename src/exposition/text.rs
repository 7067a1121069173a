//! Text writers shared by every part of the exposition: label values escaped once, exact
//! decimal amounts, the label text of a cost series, family headers, and the rewrite of
//! prometheus-client's OpenMetrics as text 0.0.4.

use std::fmt::Write as _;
use std::time::Duration;

use crate::series::{SeriesKey, TagLabels};

/// The refresh interval in the short human form used in HELP text: `1h`, `30m`, `90s`.
pub fn human_interval(d: Duration) -> String {
    humantime::format_duration(Duration::from_secs(d.as_secs().max(1))).to_string()
}

/// Appends `value` escaped as a label value (both formats): `\` `"` and newline.
pub fn escape_label_value(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// Appends `name="value"` (with a leading comma unless it is the first label).
pub fn push_label(out: &mut String, name: &str, value: &str) {
    if !out.is_empty() {
        out.push(',');
    }
    out.push_str(name);
    out.push_str("=\"");
    escape_label_value(out, value);
    out.push('"');
}

/// Appends an amount in micro-dollars as an exact decimal: `51.19`, `-0.000005`, `0`.
pub fn push_micros(out: &mut String, micros: i64) {
    let sign = if micros < 0 { "-" } else { "" };
    let abs = micros.unsigned_abs();
    let (whole, frac) = (abs / 1_000_000, abs % 1_000_000);
    let _ = write!(out, "{sign}{whole}");
    if frac != 0 {
        let digits = format!("{frac:06}");
        out.push('.');
        out.push_str(digits.trim_end_matches('0'));
    }
}

/// The length of what [`push_micros`] appends for `micros`, without writing it.
pub fn micros_len(micros: i64) -> usize {
    let abs = micros.unsigned_abs();
    let (whole, frac) = (abs / 1_000_000, abs % 1_000_000);
    let sign = usize::from(micros < 0);
    let whole_digits = whole.checked_ilog10().map_or(1, |d| d as usize + 1);
    let frac_digits = if frac == 0 {
        0
    } else {
        // The '.' and the six digits less the trailing zeros.
        let mut digits = 6;
        let mut f = frac;
        while f.is_multiple_of(10) {
            f /= 10;
            digits -= 1;
        }
        1 + digits
    };
    sign + whole_digits + frac_digits
}

/// The length of `value`'s `Display` text, without allocating it.
pub fn display_len(value: &impl std::fmt::Display) -> usize {
    struct Count(usize);
    impl std::fmt::Write for Count {
        fn write_str(&mut self, s: &str) -> std::fmt::Result {
            self.0 += s.len();
            Ok(())
        }
    }
    let mut c = Count(0);
    let _ = write!(c, "{value}");
    c.0
}

/// Appends the labels of a cost series (without `month`): `query` first, then every label it
/// has in [`crate::series::Label::ALL`] order, then its tag labels in the order of `tags` (the
/// allowlist), each value escaped.
pub fn push_series_labels(out: &mut String, query: &str, key: &SeriesKey, tags: &TagLabels) {
    push_label(out, "query", query);
    for (label, value) in key.labels() {
        push_label(out, label.as_str(), value);
    }
    for (name, value) in tags.names().iter().zip(key.tags()) {
        if let Some(value) = value.as_deref().filter(|v| !v.is_empty()) {
            push_label(out, name, value);
        }
    }
}

/// The label text of a cost series: `query="..",org_id="..",...` ([`push_series_labels`]).
pub fn label_text(query: &str, key: &SeriesKey, tags: &TagLabels) -> String {
    let mut out = String::with_capacity(160);
    push_series_labels(&mut out, query, key, tags);
    out
}

/// Appends the `# HELP` and `# TYPE` lines of a gauge family.
pub fn family_header(out: &mut String, name: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} gauge");
}

/// Rewrites prometheus-client's OpenMetrics output as text 0.0.4: no `# UNIT` or `# EOF`,
/// and counters named with their `_total` suffix in HELP and TYPE.
pub fn openmetrics_to_text(src: &str, out: &mut String) {
    let mut pending_help: Option<&str> = None;
    for line in src.lines() {
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            if let Some(h) = pending_help.replace(rest) {
                let _ = writeln!(out, "# HELP {h}");
            }
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, ""));
            let suffix = if kind == "counter" { "_total" } else { "" };
            if let Some(h) = pending_help.take() {
                let (hname, htext) = h.split_once(' ').unwrap_or((h, ""));
                let _ = writeln!(out, "# HELP {hname}{suffix} {htext}");
            }
            let _ = writeln!(out, "# TYPE {name}{suffix} {kind}");
            continue;
        }
        if let Some(h) = pending_help.take() {
            let _ = writeln!(out, "# HELP {h}");
        }
        out.push_str(line);
        out.push('\n');
    }
    if let Some(h) = pending_help {
        let _ = writeln!(out, "# HELP {h}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::series::Label;

    /// A project named `a"b\c` followed by a newline is escaped, not emitted raw.
    #[test]
    fn label_values_are_escaped() {
        let mut out = String::new();
        push_label(&mut out, "project_name", "a\"b\\c\n");
        assert_eq!(out, r#"project_name="a\"b\\c\n""#);
    }

    /// A series with every label renders `query` first, then the labels in their fixed order,
    /// each value escaped; absent labels are left out.
    #[test]
    fn series_labels_render_in_order_and_escaped() {
        let values = ["o", "O \"q\"", "p", "a\\b", "c", "line\nbreak", "S"];
        let key = SeriesKey::new(values.map(Some));
        assert_eq!(
            label_text("q\"", &key, &TagLabels::default()),
            r#"query="q\"",org_id="o",org_name="O \"q\"",project_id="p",project_name="a\\b",cluster_id="c",cluster_name="line\nbreak",atlas_service="S""#
        );
        let mut sparse = key.clone();
        for l in [Label::OrgName, Label::ProjectId, Label::ClusterId] {
            sparse.set(l, None);
        }
        assert_eq!(
            label_text("q", &sparse, &TagLabels::default()),
            r#"query="q",org_id="o",project_name="a\\b",cluster_name="line\nbreak",atlas_service="S""#
        );
    }

    /// Tag labels come after every other label, in the order of the allowlist (not of the
    /// keys' names), escaped like any value; a tag the series lacks is no label at all.
    #[test]
    fn tag_labels_follow_the_other_labels_in_allowlist_order() {
        let tags =
            TagLabels::new("--cost.tag-labels", ["team", "env", "cost-center"]).expect("valid");
        let mut key = SeriesKey::new([Some("o"), None, None, None, None, None, Some("S")]);
        key.set_tags(tags.values([("cost-center", "CC \"7\""), ("team", "web")]));
        assert_eq!(
            label_text("q", &key, &tags),
            r#"query="q",org_id="o",atlas_service="S",tag_team="web",tag_cost_center="CC \"7\"""#
        );
        // Without the names, no tag label is rendered.
        assert_eq!(
            label_text("q", &key, &TagLabels::default()),
            r#"query="q",org_id="o",atlas_service="S""#
        );
    }

    /// Amounts print as exact decimals, with no float noise.
    #[test]
    fn micros_print_exactly() {
        for (m, s) in [
            (51_190_000, "51.19"),
            (300_000, "0.3"),
            (-5, "-0.000005"),
            (0, "0"),
            (12_000_000, "12"),
        ] {
            let mut out = String::new();
            push_micros(&mut out, m);
            assert_eq!(out, s);
        }
    }

    /// The length [`micros_len`] tells is the length [`push_micros`] writes, for every kind
    /// of amount (signs, whole, fractional, trailing zeros, the extremes).
    #[test]
    fn micros_len_is_the_written_length() {
        for m in [
            0,
            5,
            -5,
            10,
            999_999,
            1_000_000,
            -1_000_000,
            51_190_000,
            300_000,
            12_000_000,
            123_456_789_010_000,
            i64::MAX,
            i64::MIN,
        ] {
            let mut out = String::new();
            push_micros(&mut out, m);
            assert_eq!(micros_len(m), out.len(), "{m}: {out}");
        }
        assert_eq!(display_len(&"héllo"), "héllo".len());
        assert_eq!(display_len(&2026), 4);
    }

    /// Counters get `_total` in HELP and TYPE for text 0.0.4; UNIT and EOF lines go.
    #[test]
    fn openmetrics_counters_are_renamed_for_text() {
        let src = "# HELP a_polls Polls.\n# TYPE a_polls counter\na_polls_total 1\n# HELP b_seconds Time.\n# TYPE b_seconds histogram\n# UNIT b_seconds seconds\nb_seconds_sum 0\n# EOF\n";
        let mut out = String::new();
        openmetrics_to_text(src, &mut out);
        assert_eq!(
            out,
            "# HELP a_polls_total Polls.\n# TYPE a_polls_total counter\na_polls_total 1\n# HELP b_seconds Time.\n# TYPE b_seconds histogram\nb_seconds_sum 0\n"
        );
    }
}
