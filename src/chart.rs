//! The landing page's picture: an org's monthly spend over the window, stacked by service, as
//! a small inline SVG (no JavaScript, nothing fetched).
//!
//! Built once per published refresh ([`crate::budget::org_summaries`]) and stored in the
//! snapshot; the landing page copies the bytes. Positive amounts stack up from zero, credits
//! (negative amounts) stack down from it, so a month whose credits exceed its charges shows
//! below the axis. Every name put in the SVG is escaped.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::month::Month;

/// An org's spend: per month, per service, micro-dollars.
pub type MonthlySpend = BTreeMap<Month, BTreeMap<String, i64>>;

/// Colours of the services, the most expensive over the window first: Okabe and Ito's
/// colour-blind safe palette (its black as a dark grey), then purple and brown.
pub const PALETTE: [&str; 10] = [
    "#0072b2", "#e69f00", "#009e73", "#cc79a7", "#56b4e9", "#d55e00", "#f0e442", "#333333",
    "#7f3c8d", "#8c564b",
];

/// The colour of the services past the palette, folded into one "other services" segment
/// per month and sign.
pub const OTHER_COLOUR: &str = "#999999";

/// The name of that segment.
pub const OTHER_SERVICES: &str = "other services";

const WIDTH: f64 = 520.0;
const HEIGHT: f64 = 230.0;
const TOP: f64 = 30.0;
const BOTTOM: f64 = 180.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 360.0;

/// One coloured piece of a month's bar.
#[derive(Clone, Debug, PartialEq)]
pub struct Segment {
    /// The service (or [`OTHER_SERVICES`]).
    pub service: String,
    /// Its spend in the month, micro-dollars (negative for credits).
    pub micros: i64,
    /// Top edge, in SVG units.
    pub y: f64,
    /// Height, in SVG units (never negative).
    pub height: f64,
    /// Fill colour.
    pub colour: &'static str,
}

/// A month's bar.
#[derive(Clone, Debug, PartialEq)]
pub struct Bar {
    /// The month.
    pub month: Month,
    /// Left edge, in SVG units.
    pub x: f64,
    /// Its segments: the positive ones upwards from the axis, then the negative ones
    /// downwards.
    pub segments: Vec<Segment>,
    /// The month's net spend, micro-dollars.
    pub net_micros: i64,
}

/// The chart's geometry, before it is written out.
#[derive(Clone, Debug, PartialEq)]
pub struct Layout {
    /// One bar per month from the first to the last month of the data, gaps included.
    pub bars: Vec<Bar>,
    /// The legend: each service with its colour, in colour order.
    pub legend: Vec<(String, &'static str)>,
    /// The y of zero spend.
    pub zero_y: f64,
    /// SVG units per micro-dollar (0 when there is nothing to draw).
    pub scale: f64,
    /// The largest positive stack and the deepest negative one, micro-dollars.
    pub range: (i64, i64),
    /// Width of a bar.
    pub bar_width: f64,
}

/// Lays out `spend`: months in order with the gaps filled, services coloured by their spend
/// over the window (largest magnitude first, ties by name).
pub fn layout(spend: &MonthlySpend) -> Layout {
    let mut totals: BTreeMap<&str, i128> = BTreeMap::new();
    for services in spend.values() {
        for (service, micros) in services {
            *totals.entry(service.as_str()).or_default() += i128::from(*micros).abs();
        }
    }
    let mut order: Vec<(&str, i128)> = totals.into_iter().filter(|(_, t)| *t > 0).collect();
    order.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
    let colour_of = |service: &str| -> Option<&'static str> {
        order
            .iter()
            .position(|(s, _)| *s == service)
            .and_then(|i| PALETTE.get(i).copied())
    };
    let mut legend: Vec<(String, &'static str)> = order
        .iter()
        .filter_map(|(s, _)| colour_of(s).map(|c| ((*s).to_owned(), c)))
        .collect();
    if order.len() > PALETTE.len() {
        legend.push((OTHER_SERVICES.to_owned(), OTHER_COLOUR));
    }

    // Per month: (service, micros, colour), positives first in colour order, then negatives.
    let (Some(first), Some(last)) = (spend.keys().next(), spend.keys().next_back()) else {
        return Layout {
            bars: Vec::new(),
            legend,
            zero_y: BOTTOM,
            scale: 0.0,
            range: (0, 0),
            bar_width: 0.0,
        };
    };
    let months: Vec<Month> = (0..=last.since(*first)).map(|i| first.plus(i)).collect();
    let empty = BTreeMap::new();
    let pieces: Vec<Vec<(String, i64, &'static str)>> = months
        .iter()
        .map(|m| {
            let services = spend.get(m).unwrap_or(&empty);
            let mut own: Vec<(String, i64, &'static str)> = Vec::new();
            let (mut other_pos, mut other_neg) = (0i64, 0i64);
            for (service, &micros) in services {
                match colour_of(service) {
                    Some(c) if micros != 0 => own.push((service.clone(), micros, c)),
                    Some(_) => {}
                    None if micros > 0 => other_pos = other_pos.saturating_add(micros),
                    None => other_neg = other_neg.saturating_add(micros),
                }
            }
            own.sort_by_key(|(s, _, _)| order.iter().position(|(o, _)| o == s));
            for other in [other_pos, other_neg] {
                if other != 0 {
                    own.push((OTHER_SERVICES.to_owned(), other, OTHER_COLOUR));
                }
            }
            own
        })
        .collect();
    let sum = |p: &[(String, i64, &'static str)], positive: bool| -> i64 {
        p.iter()
            .filter(|(_, m, _)| (*m > 0) == positive)
            .fold(0i64, |a, (_, m, _)| a.saturating_add(*m))
    };
    let max_pos = pieces.iter().map(|p| sum(p, true)).max().unwrap_or(0);
    let min_neg = pieces.iter().map(|p| sum(p, false)).min().unwrap_or(0);
    let span = i128::from(max_pos) - i128::from(min_neg);
    #[allow(clippy::cast_precision_loss)] // a picture: f64 is ample
    let scale = if span > 0 {
        (BOTTOM - TOP) / span as f64
    } else {
        0.0
    };
    #[allow(clippy::cast_precision_loss)]
    let zero_y = TOP + max_pos as f64 * scale;
    #[allow(clippy::cast_precision_loss)]
    let slot = (RIGHT - LEFT) / months.len() as f64;
    let bar_width = slot * 0.7;
    let bars = months
        .iter()
        .zip(pieces)
        .enumerate()
        .map(|(i, (month, pieces))| {
            let (mut up, mut down) = (zero_y, zero_y);
            let mut segments = Vec::with_capacity(pieces.len());
            for positive in [true, false] {
                for (service, micros, colour) in pieces.iter().filter(|p| (p.1 > 0) == positive) {
                    #[allow(clippy::cast_precision_loss)]
                    let height = (*micros as f64).abs() * scale;
                    let y = if positive {
                        up -= height;
                        up
                    } else {
                        down += height;
                        down - height
                    };
                    segments.push(Segment {
                        service: service.clone(),
                        micros: *micros,
                        y,
                        height,
                        colour,
                    });
                }
            }
            Bar {
                month: *month,
                #[allow(clippy::cast_precision_loss)]
                x: LEFT + slot * i as f64 + (slot - bar_width) / 2.0,
                net_micros: pieces.iter().fold(0i64, |a, p| a.saturating_add(p.1)),
                segments,
            }
        })
        .collect();
    Layout {
        bars,
        legend,
        zero_y,
        scale,
        range: (max_pos, min_neg),
        bar_width,
    }
}

/// Escapes text for an SVG inside HTML (element text and quoted attribute values); control
/// characters, which XML cannot hold even escaped, become U+FFFD.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() && c != '\t' && c != '\n' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

/// Micro-dollars as dollars with cents and thousands separators (`-1,234.50`).
pub fn usd(micros: i64) -> String {
    let cents = (i128::from(micros).abs() + 5_000) / 10_000;
    let digits = (cents / 100).to_string();
    let mut out = String::with_capacity(digits.len() + 8);
    if micros < 0 && cents > 0 {
        out.push('-');
    }
    for (i, d) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(d);
    }
    let _ = write!(out, ".{:02}", cents % 100);
    out
}

/// Micro-dollars, short, for the axis: `12.3k`, `-450`, `1.2M`.
fn short_usd(micros: i64) -> String {
    #[allow(clippy::cast_precision_loss)]
    let dollars = micros as f64 / 1e6;
    let (value, suffix) = match dollars.abs() {
        a if a >= 1e6 => (dollars / 1e6, "M"),
        a if a >= 1e3 => (dollars / 1e3, "k"),
        _ => (dollars, ""),
    };
    if suffix.is_empty() {
        format!("{value:.0}")
    } else {
        format!("{value:.1}{suffix}")
    }
}

/// The chart of `title`'s (an org's name and id) monthly spend, as an `<svg>` element.
pub fn spend_chart(title: &str, spend: &MonthlySpend) -> String {
    render(title, &layout(spend))
}

/// Writes `layout` out as an `<svg>` element.
pub fn render(title: &str, layout: &Layout) -> String {
    let mut svg = String::with_capacity(1024 + 400 * layout.bars.len());
    let title = escape(title);
    let _ = write!(
        svg,
        "<svg class=\"spend-chart\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" \
         height=\"{HEIGHT}\" viewBox=\"0 0 {WIDTH} {HEIGHT}\" role=\"img\" \
         aria-label=\"Monthly spend of {title}, stacked by service\">\
         <title>Monthly spend of {title}, stacked by service (USD)</title>\
         <text x=\"{LEFT}\" y=\"16\" font-size=\"13\" font-family=\"sans-serif\">{title}</text>"
    );
    if layout.scale == 0.0 {
        let _ = write!(
            svg,
            "<text class=\"no-data\" x=\"{LEFT}\" y=\"{}\" font-size=\"12\" \
             font-family=\"sans-serif\" fill=\"#666\">No spend in the window yet.</text></svg>",
            (TOP + BOTTOM) / 2.0
        );
        return svg;
    }
    // Axis: zero, the top of the largest stack, the bottom of the deepest credit.
    let mut ticks = vec![(layout.zero_y, 0i64)];
    if layout.range.0 > 0 {
        ticks.push((TOP, layout.range.0));
    }
    if layout.range.1 < 0 {
        ticks.push((BOTTOM, layout.range.1));
    }
    for (y, micros) in ticks {
        let _ = write!(
            svg,
            "<text x=\"{}\" y=\"{:.1}\" font-size=\"10\" font-family=\"sans-serif\" \
             text-anchor=\"end\" fill=\"#444\">{}</text>",
            LEFT - 6.0,
            y + 3.5,
            short_usd(micros)
        );
    }
    // Label every month when there are few, else every third.
    let every = if layout.bars.len() > 6 { 3 } else { 1 };
    let last = layout.bars.len().saturating_sub(1);
    for (i, bar) in layout.bars.iter().enumerate() {
        let _ = write!(
            svg,
            "<g class=\"bar\" data-month=\"{}\" data-net-usd=\"{}\">",
            bar.month,
            usd(bar.net_micros)
        );
        for s in &bar.segments {
            let _ = write!(
                svg,
                "<rect class=\"segment\" x=\"{:.2}\" y=\"{:.2}\" width=\"{:.2}\" height=\"{:.2}\" \
                 fill=\"{}\"><title>{}, {}: {} USD</title></rect>",
                bar.x,
                s.y,
                layout.bar_width,
                s.height,
                s.colour,
                escape(&s.service),
                bar.month,
                usd(s.micros)
            );
        }
        svg.push_str("</g>");
        if i % every == 0 || i == last {
            let _ = write!(
                svg,
                "<text x=\"{:.2}\" y=\"{}\" font-size=\"10\" font-family=\"sans-serif\" \
                 text-anchor=\"middle\" fill=\"#444\">{}</text>",
                bar.x + layout.bar_width / 2.0,
                BOTTOM + 14.0,
                bar.month
            );
        }
    }
    let _ = write!(
        svg,
        "<line x1=\"{LEFT}\" x2=\"{RIGHT}\" y1=\"{z:.2}\" y2=\"{z:.2}\" stroke=\"#333\" \
         stroke-width=\"1\"/>",
        z = layout.zero_y
    );
    for (i, (service, colour)) in layout.legend.iter().enumerate() {
        #[allow(clippy::cast_precision_loss)]
        let y = TOP + 15.0 * i as f64;
        let _ = write!(
            svg,
            "<g class=\"legend\"><rect x=\"{}\" y=\"{y}\" width=\"10\" height=\"10\" \
             fill=\"{colour}\"/><text x=\"{}\" y=\"{}\" font-size=\"11\" \
             font-family=\"sans-serif\">{}</text></g>",
            RIGHT + 15.0,
            RIGHT + 30.0,
            y + 9.0,
            escape(service)
        );
    }
    svg.push_str("</svg>");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(year: i32, month: u32) -> Month {
        Month::new(year, month).expect("a valid month")
    }

    fn spend(rows: &[(Month, &str, i64)]) -> MonthlySpend {
        let mut out = MonthlySpend::new();
        for (month, service, micros) in rows {
            *out.entry(*month)
                .or_default()
                .entry((*service).to_owned())
                .or_default() += micros;
        }
        out
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-6
    }

    /// Each month's segments stack without gaps from the axis, their heights sum to the
    /// month's total at the chart's scale, and the tallest month fills the plot.
    #[test]
    fn segments_stack_to_each_months_total() {
        let s = spend(&[
            (m(2026, 9), "Clusters", 300_000_000),
            (m(2026, 9), "Backup", 100_000_000),
            (m(2026, 10), "Clusters", 500_000_000),
            (m(2026, 10), "Backup", 100_000_000),
            (m(2026, 10), "Data Transfer", 200_000_000),
        ]);
        let l = layout(&s);
        assert_eq!(l.bars.len(), 2);
        assert_eq!(l.range, (800_000_000, 0));
        for (bar, total) in l.bars.iter().zip([400_000_000i64, 800_000_000]) {
            assert_eq!(bar.net_micros, total);
            let heights: f64 = bar.segments.iter().map(|s| s.height).sum();
            #[allow(clippy::cast_precision_loss)]
            let want = total as f64 * l.scale;
            assert!(close(heights, want), "{heights} vs {want}");
            // Stacked upwards from the axis, each segment on the one below.
            let mut edge = l.zero_y;
            for seg in &bar.segments {
                assert!(close(seg.y + seg.height, edge), "{seg:?} not on {edge}");
                edge = seg.y;
            }
        }
        assert!(close(l.bars[1].segments.last().expect("present").y, TOP));
        // Colours by spend over the window: Clusters, then Backup and Data Transfer (200 each,
        // by name).
        let legend: Vec<&str> = l.legend.iter().map(|(s, _)| s.as_str()).collect();
        assert_eq!(legend, ["Clusters", "Backup", "Data Transfer"]);
        assert_eq!(l.legend[0].1, PALETTE[0]);
    }

    /// A month whose credits exceed its charges: the charges stack above the axis, the credit
    /// below it, and the net is negative; the axis sits between the largest charge and the
    /// deepest credit.
    #[test]
    fn a_credit_month_stacks_below_the_axis() {
        let s = spend(&[
            (m(2026, 10), "Clusters", 400_000_000),
            (m(2026, 11), "Clusters", 100_000_000),
            (m(2026, 11), "Credits", -300_000_000),
        ]);
        let l = layout(&s);
        assert_eq!(l.range, (400_000_000, -300_000_000));
        let nov = &l.bars[1];
        assert_eq!(nov.net_micros, -200_000_000);
        let credit = nov
            .segments
            .iter()
            .find(|s| s.service == "Credits")
            .expect("present");
        assert!(close(credit.y, l.zero_y), "the credit hangs from the axis");
        assert!(close(credit.height, 300_000_000.0 * l.scale));
        assert!(close(credit.y + credit.height, BOTTOM));
        let charge = nov
            .segments
            .iter()
            .find(|s| s.service == "Clusters")
            .expect("present");
        assert!(close(charge.y + charge.height, l.zero_y));
        assert!(
            l.bars
                .iter()
                .flat_map(|b| &b.segments)
                .all(|s| s.height >= 0.0)
        );
        let svg = render("org", &l);
        assert!(svg.contains("data-net-usd=\"-200.00\""), "{svg}");
        assert!(
            svg.contains("<title>Credits, 2026-11: -300.00 USD</title>"),
            "{svg}"
        );
    }

    /// Months without data inside the window get an empty bar, so bars stay one per month.
    #[test]
    fn gaps_between_months_get_empty_bars() {
        let s = spend(&[
            (m(2026, 1), "Clusters", 1_000_000),
            (m(2026, 4), "Clusters", 2_000_000),
        ]);
        let l = layout(&s);
        let months: Vec<String> = l.bars.iter().map(|b| b.month.to_string()).collect();
        assert_eq!(months, ["2026-01", "2026-02", "2026-03", "2026-04"]);
        assert!(l.bars[1].segments.is_empty() && l.bars[2].segments.is_empty());
        assert!(l.bars.windows(2).all(|w| w[0].x < w[1].x));
    }

    /// Names from Atlas (the org's and the services') are escaped wherever they are put in
    /// the SVG: no markup gets through, and control characters are replaced.
    #[test]
    fn names_are_escaped_in_the_svg() {
        let s = spend(&[(m(2026, 11), "<script>alert(\"x\")</script>&'", 5_000_000)]);
        let svg = spend_chart("Org <b>\"A\" & 'B'\u{7}", &s);
        assert!(!svg.contains("<script>") && !svg.contains("<b>"), "{svg}");
        assert!(svg.contains(
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;&#39;, 2026-11: 5.00 USD"
        ));
        assert!(svg.contains(">Org &lt;b&gt;&quot;A&quot; &amp; &#39;B&#39;\u{fffd}</text>"));
        // Every `<` opens one of the chart's own elements.
        for tag in svg.split('<').skip(1) {
            let name: String = tag
                .trim_start_matches('/')
                .chars()
                .take_while(char::is_ascii_alphabetic)
                .collect();
            assert!(
                ["svg", "title", "text", "g", "rect", "line"].contains(&name.as_str()),
                "unexpected element {name:?} in {svg}"
            );
        }
    }

    /// No data (an org not refreshed yet), or only zero amounts: no bars, no division by
    /// zero, a line saying so.
    #[test]
    fn empty_data_draws_no_bars_and_says_so() {
        for s in [MonthlySpend::new(), spend(&[(m(2026, 11), "Clusters", 0)])] {
            let l = layout(&s);
            assert_eq!(l.scale, 0.0);
            assert!(l.bars.iter().all(|b| b.segments.is_empty()));
            let svg = render("org", &l);
            assert!(svg.contains("No spend in the window yet."), "{svg}");
            assert!(!svg.contains("NaN") && !svg.contains("inf"), "{svg}");
            assert!(!svg.contains("<rect"), "{svg}");
        }
    }

    /// Services past the palette fold into one grey "other services" segment per month and
    /// sign, so the stacks still sum to the month's charges and credits.
    #[test]
    fn services_past_the_palette_fold_into_other_services() {
        let mut rows: Vec<(Month, String, i64)> = (0..12i64)
            .map(|i| (m(2026, 11), format!("S{i:02}"), (20 - i) * 1_000_000))
            .collect();
        rows.push((m(2026, 11), "Zcredit".to_owned(), -1_000_000));
        let s = spend(
            &rows
                .iter()
                .map(|(m, s, v)| (*m, s.as_str(), *v))
                .collect::<Vec<_>>(),
        );
        let l = layout(&s);
        assert_eq!(l.legend.len(), PALETTE.len() + 1);
        assert_eq!(l.legend.last().expect("present").0, OTHER_SERVICES);
        let bar = &l.bars[0];
        let others: Vec<i64> = bar
            .segments
            .iter()
            .filter(|s| s.service == OTHER_SERVICES)
            .map(|s| s.micros)
            .collect();
        // S10 and S11 (10 + 9) above, the credit below.
        assert_eq!(others, [19_000_000, -1_000_000]);
        let positive: i64 = bar
            .segments
            .iter()
            .map(|s| s.micros)
            .filter(|v| *v > 0)
            .sum();
        assert_eq!(positive, (9..=20).sum::<i64>() * 1_000_000);
        assert_eq!(bar.net_micros, positive - 1_000_000);
    }
}
