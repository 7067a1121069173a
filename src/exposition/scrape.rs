//! The per-scrape render: the format and compression a scrape asks for, the query state
//! gauges and self metrics encoded for it, and the pre-encoded cost bytes appended (spliced
//! into the gzip stream when compressed) without being touched.

use std::fmt::Write as _;
use std::sync::{Arc, Mutex, Weak};
use std::time::SystemTime;

use bytes::Bytes;

use super::costs::deflate_sync;
use super::text::{family_header, human_interval, openmetrics_to_text, push_label};
use crate::metrics::SelfMetrics;
use crate::snapshot::Snapshot;

/// The exposition format of a scrape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `text/plain; version=0.0.4`: what promtool and most scrapers read.
    Text,
    /// `application/openmetrics-text; version=1.0.0`.
    OpenMetrics,
}

impl Format {
    /// The `Content-Type` of a body in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Text => "text/plain; version=0.0.4; charset=utf-8",
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

/// The quality (`q`, of any case) the parameters of an `Accept` or `Accept-Encoding` element
/// give, 1.0 when they have none; `None` when it is no RFC 9110 `qvalue` (`0` to `1`, three
/// decimals at most): such an element is ignored.
fn quality(params: &str) -> Option<f32> {
    let Some(q) = params.split(';').find_map(|p| {
        let (name, value) = p.split_once('=')?;
        name.trim().eq_ignore_ascii_case("q").then(|| value.trim())
    }) else {
        return Some(1.0);
    };
    let (int, frac) = q.split_once('.').unwrap_or((q, ""));
    let valid = frac.len() <= 3
        && frac.bytes().all(|b| b.is_ascii_digit())
        && (int == "0" || (int == "1" && frac.bytes().all(|b| b == b'0')));
    valid.then(|| q.parse().ok()).flatten()
}

/// Picks OpenMetrics when the `Accept` header asks for it at least as much as for plain
/// text, and text 0.0.4 otherwise.
pub fn negotiate(accept: Option<&str>) -> Format {
    let Some(accept) = accept else {
        return Format::Text;
    };
    let mut openmetrics = 0.0f32;
    let mut text = 0.0f32;
    for range in accept.split(',') {
        let (media, params) = range.split_once(';').unwrap_or((range, ""));
        let Some(q) = quality(params) else { continue };
        match media.trim().to_ascii_lowercase().as_str() {
            "application/openmetrics-text" => openmetrics = openmetrics.max(q),
            "text/plain" | "*/*" | "text/*" => text = text.max(q),
            _ => {}
        }
    }
    if openmetrics > 0.0 && openmetrics >= text {
        Format::OpenMetrics
    } else {
        Format::Text
    }
}

/// Whether an `Accept-Encoding` header accepts gzip: listed with a non-zero quality, or, when
/// gzip is not listed, `*` is (RFC 9110: `gzip;q=0, *` refuses gzip).
pub fn accepts_gzip(accept_encoding: Option<&str>) -> bool {
    let Some(h) = accepts_encoding_list(accept_encoding) else {
        return false;
    };
    let best = |name: &str| {
        h.iter()
            .filter(|(coding, _)| coding.eq_ignore_ascii_case(name))
            .map(|(_, q)| *q)
            .reduce(f32::max)
    };
    best("gzip").or_else(|| best("*")).is_some_and(|q| q > 0.0)
}

/// The codings of an `Accept-Encoding` header with their qualities (malformed ones left out).
fn accepts_encoding_list(accept_encoding: Option<&str>) -> Option<Vec<(&str, f32)>> {
    Some(
        accept_encoding?
            .split(',')
            .filter_map(|item| {
                let (coding, params) = item.split_once(';').unwrap_or((item, ""));
                Some((coding.trim(), quality(params)?))
            })
            .collect(),
    )
}

/// Seconds since the Unix epoch, as a float.
fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Renders the per-scrape section: query state gauges computed from the snapshot at `now`.
fn render_state(out: &mut String, snapshot: &Snapshot, now: SystemTime) {
    let refresh = human_interval(snapshot.refresh);
    let q = |s: &crate::snapshot::QueryStatus| {
        let mut l = String::new();
        push_label(&mut l, "query", &s.query);
        push_label(&mut l, "org_id", &s.org_id);
        l
    };
    family_header(
        out,
        "atlas_cost_query_up",
        &format!(
            "1 if the last refresh of the query succeeded, 0 if it failed or has not run yet; before this process's first refresh, what the last refresh kept in --storage.path said (refreshed every {refresh})"
        ),
    );
    for s in &snapshot.statuses {
        let _ = writeln!(out, "atlas_cost_query_up{{{}}} {}", q(s), u8::from(s.up));
    }
    family_header(
        out,
        "atlas_cost_query_last_success_timestamp_seconds",
        "Unix time of the last successful refresh of the query",
    );
    for s in &snapshot.statuses {
        if let Some(t) = s.last_success {
            let _ = writeln!(
                out,
                "atlas_cost_query_last_success_timestamp_seconds{{{}}} {:.3}",
                q(s),
                unix_seconds(t)
            );
        }
    }
    family_header(
        out,
        "atlas_cost_query_data_age_seconds",
        &format!(
            "Age of the cost data served for the query: now minus its last successful refresh (refreshed every {refresh})"
        ),
    );
    for s in &snapshot.statuses {
        if let Some(t) = s.last_success {
            let age = now.duration_since(t).map_or(0.0, |d| d.as_secs_f64());
            let _ = writeln!(
                out,
                "atlas_cost_query_data_age_seconds{{{}}} {age:.3}",
                q(s)
            );
        }
    }
    family_header(
        out,
        "atlas_cost_query_series",
        "Cost series (atlas_cost_usage_usd) the query contributes, from its last successful refresh",
    );
    for s in &snapshot.statuses {
        let _ = writeln!(out, "atlas_cost_query_series{{{}}} {}", q(s), s.series);
    }
    family_header(
        out,
        "atlas_cost_query_restored",
        "1 while the data served for the query was kept in --storage.path by an earlier process (until this process's first successful refresh of it), else 0",
    );
    for s in &snapshot.statuses {
        let _ = writeln!(
            out,
            "atlas_cost_query_restored{{{}}} {}",
            q(s),
            u8::from(s.restored)
        );
    }
    render_sources(out, snapshot);
    family_header(
        out,
        "atlas_cost_build_info",
        "Build information of atlas-cost-exporter: version, git revision, rustc version; always 1",
    );
    // build.rs keeps these to characters that need no escaping.
    let _ = writeln!(
        out,
        "atlas_cost_build_info{{version=\"{}\",revision=\"{}\",rustversion=\"{}\"}} 1",
        crate::version::VERSION,
        crate::version::REVISION,
        crate::version::RUSTVERSION,
    );
}

/// The per-source state gauges (node_exporter's collector success and duration): up, last
/// success and duration of each source of each org.
fn render_sources(out: &mut String, snapshot: &Snapshot) {
    if snapshot.sources.is_empty() {
        return;
    }
    let l = |s: &crate::snapshot::SourceStatus| {
        let mut l = String::new();
        push_label(&mut l, "source", s.source);
        push_label(&mut l, "org_id", &s.org_id);
        l
    };
    family_header(
        out,
        "atlas_cost_source_up",
        "1 if the last refresh of the source (cost_explorer: every query; invoices) of the org succeeded, 0 if it failed or has not run yet",
    );
    for s in &snapshot.sources {
        let _ = writeln!(out, "atlas_cost_source_up{{{}}} {}", l(s), u8::from(s.up));
    }
    family_header(
        out,
        "atlas_cost_source_last_success_timestamp_seconds",
        "Unix time of the last successful refresh of the source of the org",
    );
    for s in &snapshot.sources {
        if let Some(t) = s.last_success {
            let _ = writeln!(
                out,
                "atlas_cost_source_last_success_timestamp_seconds{{{}}} {:.3}",
                l(s),
                unix_seconds(t)
            );
        }
    }
    family_header(
        out,
        "atlas_cost_source_duration_seconds",
        "Duration of the last refresh of the source of the org, retries included",
    );
    for s in &snapshot.sources {
        if let Some(d) = s.duration {
            let _ = writeln!(
                out,
                "atlas_cost_source_duration_seconds{{{}}} {:.3}",
                l(s),
                d.as_secs_f64()
            );
        }
    }
}

/// A scrape answer: the small per-scrape parts and the shared cost bytes, sent in order
/// without being copied into one buffer. Its exact length is known, so it is sent with a
/// `Content-Length`.
#[derive(Debug, Default)]
pub struct ScrapeBody {
    chunks: std::collections::VecDeque<Bytes>,
    remaining: u64,
}

impl ScrapeBody {
    fn push(&mut self, chunk: Bytes) {
        self.remaining += chunk.len() as u64;
        self.chunks.push_back(chunk);
    }

    /// The whole body in one buffer (tests and benchmarks).
    pub fn to_vec(&self) -> Vec<u8> {
        self.chunks.iter().flat_map(|c| c.iter().copied()).collect()
    }
}

impl http_body::Body for ScrapeBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        let next = self.chunks.pop_front();
        if let Some(chunk) = &next {
            self.remaining -= chunk.len() as u64;
        }
        std::task::Poll::Ready(next.map(|c| Ok(http_body::Frame::data(c))))
    }

    fn is_end_stream(&self) -> bool {
        self.chunks.is_empty()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.remaining)
    }
}

/// The gzip member header: no name, no timestamp, unknown OS.
const GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 0x08, 0, 0, 0, 0, 0, 0, 0xff];
/// An empty final DEFLATE block with fixed codes: ends the stream.
const DEFLATE_END: [u8; 2] = [0x03, 0x00];

/// The per-scrape parts of an answer: everything but the shared cost bytes. Plain: the state
/// gauges and self metrics, and the tail (`# EOF` for OpenMetrics). gzip: the gzip header
/// with the compressed head, and the compressed tail with the end block and the trailer.
#[derive(Clone, Debug)]
struct Parts {
    head: Bytes,
    tail: Bytes,
}

/// Encodes the per-scrape parts: the query state gauges at `now` and the self metrics (the
/// only per-scrape encoding, proportional to the number of queries). With `gzip`, they are
/// compressed to go around the pre-compressed cost bytes in one gzip stream, and the CRC of
/// the whole is combined from the parts': no series is touched.
fn render_parts(
    snapshot: &Snapshot,
    metrics: &SelfMetrics,
    now: SystemTime,
    format: Format,
    gzip: bool,
) -> Parts {
    let mut head = String::with_capacity(16 * 1024);
    render_state(&mut head, snapshot, now);
    let mut registry = String::with_capacity(16 * 1024);
    let _ = metrics.encode_openmetrics(&mut registry);
    match format {
        Format::Text => openmetrics_to_text(&registry, &mut head),
        Format::OpenMetrics => head.push_str(&registry),
    }
    let tail: &'static [u8] = match format {
        Format::Text => b"",
        Format::OpenMetrics => b"# EOF\n",
    };
    if !gzip {
        return Parts {
            head: Bytes::from(head),
            tail: Bytes::from_static(tail),
        };
    }
    let costs = &snapshot.costs;
    let mut crc = crc32fast::Hasher::new();
    crc.update(head.as_bytes());
    crc.combine(&crc32fast::Hasher::new_with_initial_len(
        costs.crc, costs.len,
    ));
    crc.update(tail);
    let total = head.len() as u64 + costs.len + tail.len() as u64;
    let mut first = Vec::with_capacity(head.len() / 3 + 64);
    first.extend_from_slice(&GZIP_HEADER);
    first.extend_from_slice(&deflate_sync(head.as_bytes(), flate2::Compression::fast()));
    let mut last = deflate_sync(tail, flate2::Compression::fast());
    last.extend_from_slice(&DEFLATE_END);
    last.extend_from_slice(&crc.finalize().to_le_bytes());
    // ISIZE is the length modulo 2^32, as RFC 1952 defines it.
    #[allow(clippy::cast_possible_truncation)]
    last.extend_from_slice(&(total as u32).to_le_bytes());
    Parts {
        head: Bytes::from(first),
        tail: Bytes::from(last),
    }
}

/// The answer: the per-scrape parts around the shared cost bytes (plain or pre-compressed).
fn assemble(parts: &Parts, snapshot: &Snapshot, gzip: bool) -> ScrapeBody {
    let costs = &snapshot.costs;
    let mut body = ScrapeBody::default();
    body.push(parts.head.clone());
    for piece in &costs.pieces {
        body.push(if gzip {
            piece.deflated.clone()
        } else {
            piece.text.clone()
        });
    }
    if !parts.tail.is_empty() {
        body.push(parts.tail.clone());
    }
    body
}

/// Renders a scrape: the self metrics, then the pre-encoded cost series, then `# EOF` for
/// OpenMetrics. With `gzip`, the pre-compressed cost bytes are spliced into one gzip stream
/// between the compressed per-scrape parts, and the CRC is combined: no series is touched per
/// scrape. [`ScrapeCache::render`] is the same answer, shared between the scrapes of a second.
pub fn render(
    snapshot: &Snapshot,
    metrics: &SelfMetrics,
    now: SystemTime,
    format: Format,
    gzip: bool,
) -> ScrapeBody {
    assemble(
        &render_parts(snapshot, metrics, now, format, gzip),
        snapshot,
        gzip,
    )
}

/// One cached rendering of the per-scrape parts, and what it was rendered from.
#[derive(Debug)]
struct Slot {
    /// The snapshot (a `Weak`: the cache never keeps a replaced refresh's data alive, and
    /// the allocation it points to cannot be reused while it is held).
    snapshot: Weak<Snapshot>,
    /// [`SelfMetrics::version`] read before rendering.
    metrics_version: u64,
    /// Whole Unix seconds of the `now` the state gauges were computed at.
    second: u64,
    parts: Parts,
}

/// Shares the per-scrape parts between scrapes that would render the same bytes but for the
/// data age: same snapshot, no self metric recorded since, same second of the clock. Every
/// counter, histogram and state gauge in a scrape is therefore exact; only
/// `atlas_cost_query_data_age_seconds` may be computed up to one second before the scrape.
/// A scraper polling every few seconds never shares (each scrape renders); a burst of
/// scrapes, or several Prometheus replicas within a second, reuse one rendering.
#[derive(Debug, Default)]
pub struct ScrapeCache {
    /// One slot per (format, gzip).
    slots: Mutex<[Option<Slot>; 4]>,
}

impl ScrapeCache {
    /// [`render`], reusing the parts rendered for an earlier scrape when they would be the
    /// same (see [`ScrapeCache`]).
    pub fn render(
        &self,
        snapshot: &Arc<Snapshot>,
        metrics: &SelfMetrics,
        now: SystemTime,
        format: Format,
        gzip: bool,
    ) -> ScrapeBody {
        let index = usize::from(format == Format::OpenMetrics) * 2 + usize::from(gzip);
        // Read before rendering: a change made during the rendering moves it past this value,
        // so the next scrape renders again.
        let metrics_version = metrics.version();
        let second = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let fresh = |slot: &Slot| {
            slot.metrics_version == metrics_version
                && slot.second == second
                && std::ptr::eq(slot.snapshot.as_ptr(), Arc::as_ptr(snapshot))
        };
        let cached = self
            .lock()
            .get(index)
            .and_then(Option::as_ref)
            .filter(|slot| fresh(slot))
            .map(|slot| slot.parts.clone());
        let parts = cached.unwrap_or_else(|| {
            let parts = render_parts(snapshot, metrics, now, format, gzip);
            if let Some(slot) = self.lock().get_mut(index) {
                *slot = Some(Slot {
                    snapshot: Arc::downgrade(snapshot),
                    metrics_version,
                    second,
                    parts: parts.clone(),
                });
            }
            parts
        });
        assemble(&parts, snapshot, gzip)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, [Option<Slot>; 4]> {
        self.slots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    use crate::exposition::{RenderedSeries, encode_costs, render_sorted};
    use crate::month::Month;
    use crate::series::{CostSeries, Label, SeriesKey};
    use crate::snapshot::EncodedCosts;

    fn snapshot_with_costs(n: usize) -> Snapshot {
        let month = Month::new(2026, 11).expect("valid");
        let query: std::sync::Arc<str> = "clusters".into();
        let series = render_sorted((0..n).map(|i| {
            let mut key = SeriesKey::default();
            key.set(Label::ClusterName, Some(&format!("c{i} \"q\"")));
            CostSeries {
                query: query.clone(),
                key,
                month,
                micros: i64::try_from(i).expect("small") * 1_010_000,
            }
        }));
        let refs: Vec<&RenderedSeries> = series.iter().collect();
        let mut text = String::new();
        let usage = encode_costs(&mut text, &refs, month, "1h");
        Snapshot {
            statuses: vec![crate::snapshot::QueryStatus::pending(
                "clusters",
                "5f1b2c3d4e5f6a7b8c9d0e1f",
            )],
            orgs: Vec::new(),
            sources: Vec::new(),
            costs: EncodedCosts::seal(text, usage),
            refresh: Duration::from_secs(3600),
            generation: 1,
        }
    }

    /// A gzip scrape, built by splicing the pre-compressed cost bytes between per-scrape
    /// parts, is one valid gzip stream (CRC and length checked by the decoder) whose content
    /// is exactly the uncompressed scrape, in both formats.
    #[test]
    fn spliced_gzip_decodes_to_the_plain_body() {
        use std::io::Read as _;
        let snapshot = snapshot_with_costs(5000);
        let metrics = SelfMetrics::new("1h");
        let now = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_795_000_000);
        for format in [Format::Text, Format::OpenMetrics] {
            let plain = render(&snapshot, &metrics, now, format, false).to_vec();
            let gz = render(&snapshot, &metrics, now, format, true).to_vec();
            assert!(gz.len() * 5 < plain.len(), "{format:?}: compressed");
            let mut decoded = Vec::new();
            flate2::read::GzDecoder::new(&gz[..])
                .read_to_end(&mut decoded)
                .expect("valid gzip with a correct CRC and length");
            assert_eq!(decoded, plain, "{format:?}");
            // One member only: nothing follows the trailer.
            let mut decoder = flate2::bufread::GzDecoder::new(&gz[..]);
            std::io::copy(&mut decoder, &mut std::io::sink()).expect("decodes");
            assert!(
                decoder.into_inner().is_empty(),
                "{format:?}: a single gzip member"
            );
        }
        let om = render(&snapshot, &metrics, now, Format::OpenMetrics, false).to_vec();
        assert!(om.ends_with(b"\n# EOF\n"));
    }

    fn decoded(body: &ScrapeBody, gzip: bool) -> String {
        use std::io::Read as _;
        let bytes = body.to_vec();
        if !gzip {
            return String::from_utf8(bytes).expect("utf-8");
        }
        let mut out = String::new();
        flate2::read::GzDecoder::new(&bytes[..])
            .read_to_string(&mut out)
            .expect("valid gzip");
        out
    }

    /// Scrapes within one second, of the same snapshot, with no self metric recorded in
    /// between, share one rendering (the same head buffer), in every format and encoding, and
    /// get the bytes a fresh render gives.
    #[test]
    fn scrapes_of_one_second_share_one_rendering() {
        let snapshot = Arc::new(snapshot_with_costs(100));
        let metrics = SelfMetrics::new("1h");
        let cache = ScrapeCache::default();
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_000_000);
        for format in [Format::Text, Format::OpenMetrics] {
            for gzip in [false, true] {
                let first = cache.render(&snapshot, &metrics, t, format, gzip);
                let later = t + Duration::from_millis(999);
                let second = cache.render(&snapshot, &metrics, later, format, gzip);
                assert_eq!(
                    first.chunks[0].as_ptr(),
                    second.chunks[0].as_ptr(),
                    "{format:?} gzip={gzip}: reused"
                );
                assert_eq!(
                    decoded(&second, gzip),
                    decoded(&render(&snapshot, &metrics, t, format, gzip), gzip)
                );
            }
        }
    }

    /// A self metric recorded after a scrape shows in the next scrape of the same second: the
    /// shared rendering never hides a count.
    #[test]
    fn a_recorded_self_metric_shows_in_the_next_scrape() {
        let snapshot = Arc::new(snapshot_with_costs(10));
        let metrics = SelfMetrics::new("1h");
        let labels = crate::metrics::QueryLabels {
            query: "clusters".to_owned(),
            org_id: "5f1b2c3d4e5f6a7b8c9d0e1f".to_owned(),
        };
        metrics.count_poll(&labels);
        let cache = ScrapeCache::default();
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_000_000);
        let polls =
            r#"atlas_cost_query_polls_total{query="clusters",org_id="5f1b2c3d4e5f6a7b8c9d0e1f"}"#;
        for (gzip, count) in [(false, 1), (true, 3)] {
            let before = decoded(
                &cache.render(&snapshot, &metrics, t, Format::Text, gzip),
                gzip,
            );
            assert!(before.contains(&format!("{polls} {count}\n")), "{before}");
            metrics.count_poll(&labels);
            let after = decoded(
                &cache.render(&snapshot, &metrics, t, Format::Text, gzip),
                gzip,
            );
            let count = count + 1;
            assert!(
                after.contains(&format!("{polls} {count}\n")),
                "gzip={gzip}: {after}"
            );
            metrics.count_poll(&labels);
        }
    }

    /// The data age is computed again in the next second, and a newly published snapshot is
    /// rendered at once; the cache keeps no replaced snapshot alive.
    #[test]
    fn a_new_second_or_snapshot_renders_again() {
        let mut snap = snapshot_with_costs(10);
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_000_000);
        snap.statuses[0].last_success = Some(t - Duration::from_secs(60));
        snap.statuses[0].up = true;
        let snapshot = Arc::new(snap.clone());
        let metrics = SelfMetrics::new("1h");
        let cache = ScrapeCache::default();
        let age = |body: &ScrapeBody| {
            decoded(body, true)
                .lines()
                .find(|l| l.starts_with("atlas_cost_query_data_age_seconds{"))
                .map(str::to_owned)
        };
        let first = cache.render(&snapshot, &metrics, t, Format::Text, true);
        assert!(age(&first).expect("age").ends_with(" 60.000"));
        let next = cache.render(
            &snapshot,
            &metrics,
            t + Duration::from_secs(1),
            Format::Text,
            true,
        );
        assert!(age(&next).expect("age").ends_with(" 61.000"));

        snap.statuses[0].up = false;
        let replaced = Arc::downgrade(&snapshot);
        drop(snapshot);
        assert!(replaced.upgrade().is_none(), "the cache holds no snapshot");
        let published = Arc::new(snap);
        let body = cache.render(
            &published,
            &metrics,
            t + Duration::from_secs(1),
            Format::Text,
            true,
        );
        assert!(decoded(&body, true).contains(
            "atlas_cost_query_up{query=\"clusters\",org_id=\"5f1b2c3d4e5f6a7b8c9d0e1f\"} 0\n"
        ));
    }

    /// Cost text in several pieces (one per query and family, as a refresh publishes it)
    /// splices into one gzip stream whose content is the pieces in order, and the plain body
    /// is the same bytes.
    #[test]
    fn cost_pieces_splice_in_order() {
        use crate::snapshot::CostPiece;
        use std::io::Read as _;
        let whole = snapshot_with_costs(3000);
        let text = String::from_utf8(whole.costs.text()).expect("utf-8");
        let mut pieces = Vec::new();
        let mut rest = text.as_str();
        // Uneven pieces, one of them empty (dropped), split at line ends.
        for take in [0, 10, 1, 500, 7] {
            let end = rest
                .match_indices('\n')
                .nth(take)
                .map_or(rest.len(), |(i, _)| i + 1);
            let (piece, tail) = rest.split_at(if take == 0 { 0 } else { end });
            pieces.push(CostPiece::seal(piece.to_owned()));
            rest = tail;
        }
        pieces.push(CostPiece::seal(rest.to_owned()));
        let split = Snapshot {
            costs: crate::snapshot::EncodedCosts::from_pieces(pieces, whole.costs.usage_series),
            ..whole.clone()
        };
        assert_eq!(split.costs.pieces.len(), 5, "the empty piece is dropped");
        assert_eq!(split.costs.crc, whole.costs.crc);
        assert_eq!(split.costs.len, whole.costs.len);
        let metrics = SelfMetrics::new("1h");
        let now = SystemTime::UNIX_EPOCH;
        for format in [Format::Text, Format::OpenMetrics] {
            let plain = render(&whole, &metrics, now, format, false).to_vec();
            assert_eq!(render(&split, &metrics, now, format, false).to_vec(), plain);
            let gz = render(&split, &metrics, now, format, true).to_vec();
            let mut decoded = Vec::new();
            flate2::read::GzDecoder::new(&gz[..])
                .read_to_end(&mut decoded)
                .expect("valid gzip with a correct CRC and length");
            assert_eq!(decoded, plain, "{format:?}");
        }
    }

    /// The body announces its exact length, so it is sent with a Content-Length.
    #[test]
    fn scrape_body_has_an_exact_size() {
        use http_body::Body as _;
        let snapshot = snapshot_with_costs(10);
        let body = render(
            &snapshot,
            &SelfMetrics::new("1h"),
            SystemTime::UNIX_EPOCH,
            Format::Text,
            true,
        );
        assert_eq!(body.size_hint().exact(), Some(body.to_vec().len() as u64));
    }

    /// Prometheus's own Accept header gets OpenMetrics; curl and promtool get text.
    #[test]
    fn negotiation_follows_accept() {
        let prom = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(negotiate(Some(prom)), Format::OpenMetrics);
        assert_eq!(negotiate(None), Format::Text);
        assert_eq!(negotiate(Some("*/*")), Format::Text);
        assert_eq!(negotiate(Some("text/plain;version=0.0.4")), Format::Text);
        assert_eq!(
            negotiate(Some("application/openmetrics-text;q=0.2,text/plain;q=0.9")),
            Format::Text
        );
        assert_eq!(
            negotiate(Some("application/openmetrics-text;q=0")),
            Format::Text
        );
    }

    /// gzip is used only when accepted with a non-zero quality.
    #[test]
    fn gzip_only_when_accepted() {
        assert!(accepts_gzip(Some("gzip, deflate")));
        assert!(accepts_gzip(Some("br;q=1.0, gzip;q=0.8")));
        assert!(!accepts_gzip(Some("gzip;q=0")));
        assert!(!accepts_gzip(Some("identity")));
        assert!(!accepts_gzip(None));
    }

    /// `gzip;q=0` refuses gzip even beside `*` (RFC 9110: `*` is every coding not listed);
    /// `*` alone accepts it (found by the `scrape_headers` fuzz target).
    #[test]
    fn an_explicit_gzip_refusal_beats_the_wildcard() {
        assert!(!accepts_gzip(Some("gzip;q=0, *")));
        assert!(!accepts_gzip(Some("*, GZIP; q=0")));
        assert!(accepts_gzip(Some("*")));
        assert!(!accepts_gzip(Some("*;q=0")));
    }

    /// `q` is read in any case, and an element whose `q` is no `qvalue` (`0` to `1`, three
    /// decimals at most) is ignored: `text/plain;Q=0` refuses text, `q=inf` or `q=2` weighs
    /// nothing (both weighed 1 or more before).
    #[test]
    fn qualities_follow_rfc_9110() {
        assert_eq!(
            negotiate(Some("application/openmetrics-text;q=0.5,text/plain;Q=0.6")),
            Format::Text
        );
        assert_eq!(
            negotiate(Some("application/openmetrics-text;q=0.5,text/plain;Q=0")),
            Format::OpenMetrics
        );
        assert_eq!(
            negotiate(Some("application/openmetrics-text;q=inf,text/plain;q=0.1")),
            Format::Text
        );
        assert!(!accepts_gzip(Some("gzip;q=2")));
        assert!(!accepts_gzip(Some("gzip;q=0.0001")));
        assert!(accepts_gzip(Some("gzip;q=0.001")));
    }
}
