//! The bytes of a state file.
//!
//! ```text
//! offset  size  what
//!      0     8  magic "ACESTATE"
//!      8     4  format version, little-endian (FORMAT_VERSION)
//!     12     8  length n of the main data that follows, little-endian
//!     20     4  CRC-32 (IEEE) of that data, little-endian
//!     24     n  the main data: postcard (serde, varints) of `Wire`
//!   24+n     m  format 2 on, when the org runs the invoice source: the invoice section
//!               (`invoices`: its own length, CRC-32 and data)
//! ```
//!
//! Every string is stored once, in a table, and referred to by its index; so is every label
//! set, which a series refers to by index with its month and amount (a label set shared by
//! 18 months is written once). A file whose header, length, checksum or main data is wrong
//! is refused with a [`DecodeError`] that says which; nothing in it is used. A bad invoice
//! section loses only the invoice part ([`OrgState::invoices_error`] says why).
//!
//! Format 1 (the first release with `--storage.path`) is format 2 without the invoice
//! section: its files are read as they are, with no invoice part.

use std::borrow::Cow;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

mod invoices;

use super::{ClosedMonth, KeptStatus, Known, KnownState, OrgState, QueryState};
use crate::exposition::render_tagged;
use crate::month::Month;
use crate::series::{CostSeries, Label, SeriesKey, TagLabels, TagValues};

/// The first bytes of every state file.
const MAGIC: [u8; 8] = *b"ACESTATE";

/// The format this release writes. A file of a higher version was written by a newer
/// release; it is set aside, never guessed at.
pub const FORMAT_VERSION: u32 = 2;

/// The oldest format this release reads: 1, the same without the invoice section.
const OLDEST_FORMAT: u32 = 1;

/// Magic, version, length, checksum.
const HEADER_LEN: usize = 24;

/// Months are kept as their count since year 0; a month outside these years is garbage.
const YEARS: std::ops::RangeInclusive<i32> = 1970..=9999;

/// Why a state file was not used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Not even a header.
    #[error("truncated: {len} bytes, shorter than the {HEADER_LEN}-byte header")]
    Short {
        /// The file's length.
        len: usize,
    },
    /// Not a state file.
    #[error("not an atlas-cost-exporter state file (no ACESTATE magic at the start)")]
    Magic,
    /// Written by a newer release.
    #[error(
        "state format {found} was written by a newer release (this release reads format {FORMAT_VERSION})"
    )]
    Newer {
        /// The version in the header.
        found: u32,
    },
    /// A version no release wrote.
    #[error("unknown state format {found} (this release reads format {FORMAT_VERSION})")]
    Unknown {
        /// The version in the header.
        found: u32,
    },
    /// Shorter than its header says.
    #[error("truncated: the header announces {want} bytes of data, {have} follow")]
    Truncated {
        /// Bytes announced.
        want: u64,
        /// Bytes present.
        have: u64,
    },
    /// Longer than its header says.
    #[error("{extra} bytes follow the data the header announces")]
    Trailing {
        /// Bytes beyond it.
        extra: u64,
    },
    /// The data is not what was written.
    #[error("garbled: the data's CRC-32 is {found:08x}, the header says {want:08x}")]
    Checksum {
        /// The checksum in the header.
        want: u32,
        /// The checksum of the data.
        found: u32,
    },
    /// The checksum matches but the data does not decode.
    #[error("the data does not decode: {0}")]
    Payload(String),
    /// The data decodes but refers to what it does not hold.
    #[error("invalid content: {0}")]
    Invalid(String),
}

/// The data of a file. Field order is the format: never reorder, only add at a new version.
#[derive(Serialize, Deserialize)]
struct Wire<'a> {
    #[serde(borrow)]
    org_id: Cow<'a, str>,
    written_at_ns: u64,
    #[serde(borrow)]
    strings: Vec<Cow<'a, str>>,
    keys: Vec<WireKey>,
    id_sets: Vec<Vec<u32>>,
    projects: Vec<WireKnown>,
    clusters: Vec<WireKnown>,
    #[serde(borrow)]
    queries: Vec<WireQuery<'a>>,
}

/// A label set: each label of [`Label::ALL`] and each tag value as a string index plus one,
/// 0 for none.
#[derive(Serialize, Deserialize)]
struct WireKey {
    labels: [u32; 7],
    tags: Vec<u32>,
}

/// A project or cluster: id, name, project (plus one, 0 for none) and tag pairs as string
/// indexes.
#[derive(Serialize, Deserialize)]
struct WireKnown {
    id: u32,
    name: u32,
    project: u32,
    tags: Vec<(u32, u32)>,
    last_seen_ns: u64,
}

#[derive(Serialize, Deserialize)]
struct WireQuery<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
    fingerprint: u64,
    up: bool,
    last_success_ns: Option<u64>,
    last_attempt_ns: Option<u64>,
    #[serde(borrow)]
    last_error: Option<Cow<'a, str>>,
    invalid_rows: u64,
    shed: u64,
    window: Option<(u32, u32)>,
    /// (label set, month, micro-dollars).
    series: Vec<(u32, u32, i64)>,
    closed: Vec<WireClosed>,
}

#[derive(Serialize, Deserialize)]
struct WireClosed {
    month: u32,
    read_at_ns: u64,
    /// Index into `id_sets`.
    ids: u32,
    /// (label set, micro-dollars).
    series: Vec<(u32, i64)>,
}

/// A hasher for addresses: they are already unique, one multiplication spreads them.
#[derive(Default)]
struct AddrHasher(u64);

impl Hasher for AddrHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8 | u64::from(*b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }

    fn write_usize(&mut self, n: usize) {
        self.0 = (n as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

type ByAddr = HashMap<usize, u32, BuildHasherDefault<AddrHasher>>;

/// The string, label set and id set tables of a file being written. Label sets and id sets
/// are shared by address first (the refresher shares one key across months), by value after.
#[derive(Default)]
struct Tables<'a> {
    strings: Vec<&'a str>,
    string_index: HashMap<&'a str, u32>,
    keys: Vec<WireKey>,
    key_by_addr: ByAddr,
    key_by_value: HashMap<&'a SeriesKey, u32>,
    id_sets: Vec<Vec<u32>>,
    ids_by_addr: ByAddr,
}

fn index(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

impl<'a> Tables<'a> {
    fn string(&mut self, s: &'a str) -> u32 {
        if let Some(i) = self.string_index.get(s) {
            return *i;
        }
        let i = index(self.strings.len());
        self.strings.push(s);
        self.string_index.insert(s, i);
        i
    }

    fn optional(&mut self, s: Option<&'a str>) -> u32 {
        s.map_or(0, |s| self.string(s) + 1)
    }

    fn key(&mut self, key: &'a SeriesKey) -> u32 {
        if let Some(i) = self.key_by_addr.get(&key.addr()) {
            return *i;
        }
        let i = match self.key_by_value.get(key) {
            Some(i) => *i,
            None => {
                let labels = Label::ALL.map(|l| self.optional(key.get(l)));
                let tags = key
                    .tags()
                    .iter()
                    .map(|t| self.optional(t.as_deref()))
                    .collect();
                let i = index(self.keys.len());
                self.keys.push(WireKey { labels, tags });
                self.key_by_value.insert(key, i);
                i
            }
        };
        self.key_by_addr.insert(key.addr(), i);
        i
    }

    fn ids(&mut self, ids: &'a Arc<Vec<String>>) -> u32 {
        let addr = Arc::as_ptr(ids).addr();
        if let Some(i) = self.ids_by_addr.get(&addr) {
            return *i;
        }
        let set = ids.iter().map(|id| self.string(id)).collect();
        let i = index(self.id_sets.len());
        self.id_sets.push(set);
        self.ids_by_addr.insert(addr, i);
        i
    }

    fn known(&mut self, k: &'a Known) -> WireKnown {
        WireKnown {
            id: self.string(&k.id),
            name: self.string(&k.name),
            project: self.optional(k.project_id.as_deref()),
            tags: k
                .tags
                .iter()
                .map(|(key, value)| (self.string(key), self.string(value)))
                .collect(),
            last_seen_ns: nanos(k.last_seen),
        }
    }
}

/// Nanoseconds since the epoch: the time exactly as it was (until the year 2554).
fn nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

fn time(ns: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(ns)
}

/// Month 0 of year 0: months are kept as their distance from it.
fn epoch_month() -> Month {
    Month::new(0, 1).unwrap_or_else(|| Month::containing(UNIX_EPOCH))
}

fn month_index(m: Month) -> u32 {
    u32::try_from(m.since(epoch_month())).unwrap_or(0)
}

fn month(i: u32) -> Result<Month, DecodeError> {
    let m = epoch_month().plus(i64::from(i));
    if YEARS.contains(&m.year()) {
        Ok(m)
    } else {
        Err(DecodeError::Invalid(format!("month {m} is out of range")))
    }
}

/// The bytes of `state`: header and data.
///
/// # Errors
/// Only if postcard refuses a value, which the types here do not allow.
pub fn encode(state: &OrgState) -> Result<Vec<u8>, String> {
    let mut t = Tables::default();
    let projects = state.known.projects.iter().map(|k| t.known(k)).collect();
    let clusters = state.known.clusters.iter().map(|k| t.known(k)).collect();
    let queries = state
        .queries
        .iter()
        .map(|q| WireQuery {
            name: Cow::Borrowed(&q.name),
            fingerprint: q.fingerprint,
            up: q.status.up,
            last_success_ns: q.status.last_success.map(nanos),
            last_attempt_ns: q.status.last_attempt.map(nanos),
            last_error: q.status.last_error.as_deref().map(Cow::Borrowed),
            invalid_rows: q.status.invalid_rows,
            shed: q.status.shed,
            window: q.window.map(|(a, b)| (month_index(a), month_index(b))),
            series: q
                .series
                .iter()
                .map(|s| {
                    (
                        t.key(&s.series.key),
                        month_index(s.series.month),
                        s.series.micros,
                    )
                })
                .collect(),
            closed: q
                .closed
                .iter()
                .map(|c| WireClosed {
                    month: month_index(c.month),
                    read_at_ns: nanos(c.read_at),
                    ids: t.ids(&c.ids),
                    series: c.series.iter().map(|(k, v)| (t.key(k), *v)).collect(),
                })
                .collect(),
        })
        .collect();
    let wire = Wire {
        org_id: Cow::Borrowed(&state.org_id),
        written_at_ns: state.written_at.map_or(0, nanos),
        strings: t.strings.iter().map(|s| Cow::Borrowed(*s)).collect(),
        keys: t.keys,
        id_sets: t.id_sets,
        projects,
        clusters,
        queries,
    };
    let out = postcard::to_extend(&wire, vec![0u8; HEADER_LEN]).map_err(|e| e.to_string())?;
    let out = seal(out);
    match &state.invoices {
        Some(kept) => invoices::encode(kept, out),
        None => Ok(out),
    }
}

/// Fills in the header of `out`, whose main data follows its first [`HEADER_LEN`] bytes.
fn seal(mut out: Vec<u8>) -> Vec<u8> {
    let data_len = (out.len() - HEADER_LEN) as u64;
    let crc = crc32fast::hash(&out[HEADER_LEN..]);
    out[0..8].copy_from_slice(&MAGIC);
    out[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    out[12..20].copy_from_slice(&data_len.to_le_bytes());
    out[20..24].copy_from_slice(&crc.to_le_bytes());
    out
}

fn le_u32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_le_bytes(a)
}

fn le_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

/// The main data of `bytes` once its header, length and checksum are right, and what
/// follows it (the invoice section, format 2 on).
fn checked(bytes: &[u8]) -> Result<(&[u8], &[u8]), DecodeError> {
    // What there is of the magic must match: a short file of something else is not ours.
    let n = bytes.len().min(MAGIC.len());
    if bytes[..n] != MAGIC[..n] {
        return Err(DecodeError::Magic);
    }
    if bytes.len() < HEADER_LEN {
        return Err(DecodeError::Short { len: bytes.len() });
    }
    let version = le_u32(&bytes[8..12]);
    if version > FORMAT_VERSION {
        return Err(DecodeError::Newer { found: version });
    }
    if version < OLDEST_FORMAT {
        return Err(DecodeError::Unknown { found: version });
    }
    let want = le_u64(&bytes[12..20]);
    let have = (bytes.len() - HEADER_LEN) as u64;
    if have < want {
        return Err(DecodeError::Truncated { want, have });
    }
    if have > want && version == 1 {
        return Err(DecodeError::Trailing { extra: have - want });
    }
    // At most the file's length (checked above).
    let end = HEADER_LEN + usize::try_from(want).unwrap_or(usize::MAX);
    let data = &bytes[HEADER_LEN..end];
    let want = le_u32(&bytes[20..24]);
    let found = crc32fast::hash(data);
    if found != want {
        return Err(DecodeError::Checksum { want, found });
    }
    Ok((data, &bytes[end..]))
}

/// Reads the decoded tables back into shared values.
struct Reader<'w> {
    strings: &'w [Cow<'w, str>],
    /// Tag values made once per string.
    tag_values: Vec<Option<Arc<str>>>,
}

impl<'w> Reader<'w> {
    fn string(&self, i: u32) -> Result<&'w str, DecodeError> {
        self.strings
            .get(i as usize)
            .map(|s| s.as_ref())
            .ok_or_else(|| DecodeError::Invalid(format!("string {i} of {}", self.strings.len())))
    }

    fn optional(&self, i: u32) -> Result<Option<&'w str>, DecodeError> {
        match i {
            0 => Ok(None),
            i => self.string(i - 1).map(Some),
        }
    }

    fn tag(&mut self, i: u32) -> Result<Option<Arc<str>>, DecodeError> {
        let Some(s) = self.optional(i)? else {
            return Ok(None);
        };
        let slot = &mut self.tag_values[(i - 1) as usize];
        Ok(Some(slot.get_or_insert_with(|| Arc::from(s)).clone()))
    }

    fn key(&mut self, k: &WireKey, tag_count: usize) -> Result<SeriesKey, DecodeError> {
        let mut labels = [None; 7];
        for (slot, i) in labels.iter_mut().zip(k.labels) {
            *slot = self.optional(i)?;
        }
        let mut key = SeriesKey::new(labels);
        if !k.tags.is_empty() {
            if k.tags.len() != tag_count {
                return Err(DecodeError::Invalid(format!(
                    "a label set has {} tag values for {tag_count} tag labels",
                    k.tags.len()
                )));
            }
            let values = k
                .tags
                .iter()
                .map(|i| self.tag(*i))
                .collect::<Result<Vec<_>, _>>()?;
            if values.iter().any(Option::is_some) {
                key.set_tags(TagValues::from(values));
            }
        }
        Ok(key)
    }

    fn known(&self, k: &WireKnown) -> Result<Known, DecodeError> {
        Ok(Known {
            id: self.string(k.id)?.to_owned(),
            name: self.string(k.name)?.to_owned(),
            project_id: self.optional(k.project)?.map(str::to_owned),
            tags: k
                .tags
                .iter()
                .map(|(key, value)| {
                    Ok((
                        self.string(*key)?.to_owned(),
                        self.string(*value)?.to_owned(),
                    ))
                })
                .collect::<Result<_, DecodeError>>()?,
            last_seen: time(k.last_seen_ns),
        })
    }
}

fn lookup<T: Clone>(table: &[T], i: u32, what: &str) -> Result<T, DecodeError> {
    table
        .get(i as usize)
        .cloned()
        .ok_or_else(|| DecodeError::Invalid(format!("{what} {i} of {}", table.len())))
}

/// The state in `bytes`; the series rendered with `tags`, the tag labels they were kept
/// with (the fingerprint of a grouped query includes them).
///
/// A bad invoice section is no error: the state comes without its invoice part, and
/// [`OrgState::invoices_error`] says what was wrong with it.
///
/// # Errors
/// A [`DecodeError`] naming what is wrong: a short, truncated or overlong file, another
/// file, a format of a newer or unknown release, a checksum that does not match, or data
/// that does not decode or refers to what it does not hold.
pub fn decode(bytes: &[u8], tags: &TagLabels) -> Result<OrgState, DecodeError> {
    let (data, section) = checked(bytes)?;
    let (wire, rest): (Wire<'_>, &[u8]) =
        postcard::take_from_bytes(data).map_err(|e| DecodeError::Payload(e.to_string()))?;
    if !rest.is_empty() {
        return Err(DecodeError::Payload(format!(
            "{} bytes left after the data",
            rest.len()
        )));
    }
    let mut r = Reader {
        strings: &wire.strings,
        tag_values: vec![None; wire.strings.len()],
    };
    let keys = wire
        .keys
        .iter()
        .map(|k| r.key(k, tags.len()))
        .collect::<Result<Vec<_>, _>>()?;
    let id_sets = wire
        .id_sets
        .iter()
        .map(|set| {
            let mut ids = set
                .iter()
                .map(|i| r.string(*i).map(str::to_owned))
                .collect::<Result<Vec<_>, _>>()?;
            // The month cache searches them: sorted, whatever the file says.
            ids.sort_unstable();
            Ok(Arc::new(ids))
        })
        .collect::<Result<Vec<_>, DecodeError>>()?;
    let known = KnownState {
        projects: wire
            .projects
            .iter()
            .map(|k| r.known(k))
            .collect::<Result<_, _>>()?,
        clusters: wire
            .clusters
            .iter()
            .map(|k| r.known(k))
            .collect::<Result<_, _>>()?,
    };
    let mut queries = Vec::with_capacity(wire.queries.len());
    for q in &wire.queries {
        let name: Arc<str> = Arc::from(q.name.as_ref());
        let series = q
            .series
            .iter()
            .map(|(k, m, micros)| {
                Ok(CostSeries {
                    query: name.clone(),
                    key: lookup(&keys, *k, "label set")?,
                    month: month(*m)?,
                    micros: *micros,
                })
            })
            .collect::<Result<Vec<_>, DecodeError>>()?;
        let closed = q
            .closed
            .iter()
            .map(|c| {
                Ok(ClosedMonth {
                    month: month(c.month)?,
                    read_at: time(c.read_at_ns),
                    ids: lookup(&id_sets, c.ids, "id set")?,
                    series: Arc::new(
                        c.series
                            .iter()
                            .map(|(k, v)| Ok((lookup(&keys, *k, "label set")?, *v)))
                            .collect::<Result<Vec<_>, DecodeError>>()?,
                    ),
                })
            })
            .collect::<Result<Vec<_>, DecodeError>>()?;
        let window = match q.window {
            Some((a, b)) => Some((month(a)?, month(b)?)),
            None => None,
        };
        queries.push(QueryState {
            name: q.name.to_string(),
            fingerprint: q.fingerprint,
            status: KeptStatus {
                up: q.up,
                last_success: q.last_success_ns.map(time),
                last_attempt: q.last_attempt_ns.map(time),
                last_error: q.last_error.as_deref().map(str::to_owned),
                invalid_rows: q.invalid_rows,
                shed: q.shed,
            },
            window,
            series: Arc::new(render_tagged(series, tags)),
            closed,
        });
    }
    let (invoices, invoices_error) = match section {
        [] => (None, None),
        section => match invoices::decode(section) {
            Ok(kept) => (Some(kept), None),
            Err(e) => (None, Some(e)),
        },
    };
    Ok(OrgState {
        org_id: wire.org_id.to_string(),
        written_at: (wire.written_at_ns > 0).then(|| time(wire.written_at_ns)),
        known,
        queries,
        invoices,
        invoices_error,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exposition::RenderedSeries;
    use crate::invoice::{InvoiceData, LineItem, SkuKey, SkuSeries, UnitPrice};
    use crate::state::{InvoiceState, KeptSourceStatus};

    const ORG: &str = "5f1b2c3d4e5f6a7b8c9d0e1f";

    fn m(month: u32) -> Month {
        Month::new(2026, month).expect("valid")
    }

    /// An org's state with tagged cluster series over two months sharing one key, a closed
    /// month, a failing status and a deleted cluster's last seen tags.
    fn sample(tags: &TagLabels) -> OrgState {
        let mut key = SeriesKey::new([
            Some(ORG),
            Some("Org \"one\""),
            Some("111111111111111111111111"),
            Some("web\nfront"),
            Some("cccccccccccccccccccccccc"),
            Some("prod"),
            Some("Clusters"),
        ]);
        key.set_tags(tags.values([("team", "search"), ("env", "prod")]));
        let other = key.above(Label::ClusterId);
        let series: Vec<CostSeries> = [(m(10), 1_500_000), (m(11), -250)]
            .into_iter()
            .map(|(month, micros)| CostSeries {
                query: Arc::from("clusters"),
                key: key.clone(),
                month,
                micros,
            })
            .chain(std::iter::once(CostSeries {
                query: Arc::from("clusters"),
                key: other.clone(),
                month: m(11),
                micros: 7,
            }))
            .collect();
        let t = |ms: u64| UNIX_EPOCH + Duration::from_millis(ms) + Duration::from_nanos(123_456);
        OrgState {
            org_id: ORG.to_owned(),
            written_at: Some(t(1_790_000_000_123)),
            known: KnownState {
                projects: vec![Known {
                    id: "111111111111111111111111".to_owned(),
                    name: "web\nfront".to_owned(),
                    project_id: None,
                    tags: vec![("team".to_owned(), "web".to_owned())],
                    last_seen: t(1_790_000_000_000),
                }],
                clusters: vec![Known {
                    id: "cccccccccccccccccccccccc".to_owned(),
                    name: "prod".to_owned(),
                    project_id: Some("111111111111111111111111".to_owned()),
                    tags: vec![
                        ("team".to_owned(), "search".to_owned()),
                        ("owner".to_owned(), "é".to_owned()),
                    ],
                    last_seen: t(1_780_000_000_000),
                }],
            },
            queries: vec![QueryState {
                name: "clusters".to_owned(),
                fingerprint: 0xdead_beef_0123_4567,
                status: KeptStatus {
                    up: false,
                    last_success: Some(t(1_789_999_000_000)),
                    last_attempt: Some(t(1_790_000_000_000)),
                    last_error: Some("Atlas answered 503".to_owned()),
                    invalid_rows: 2,
                    shed: 3,
                },
                window: Some((m(9), m(11))),
                series: Arc::new(render_tagged(series, tags)),
                closed: vec![ClosedMonth {
                    month: m(9),
                    read_at: t(1_789_000_000_000),
                    ids: Arc::new(vec!["cccccccccccccccccccccccc".to_owned()]),
                    series: Arc::new(vec![(key, 42), (other, 0)]),
                }],
            }],
            invoices: None,
            invoices_error: None,
        }
    }

    /// An invoice source's state: tagged SKU series of the org and of a linked org (one
    /// without project or cluster), unit prices with and without a unit, a failing status
    /// after a success, and the closed invoice's items of October.
    fn invoice_sample() -> InvoiceState {
        let key = |org: &str, sku: &str| SkuKey {
            org_id: org.to_owned(),
            project_id: Some("111111111111111111111111".to_owned()),
            project_name: Some("Pay \"PCI\"".to_owned()),
            cluster_name: Some("prod".to_owned()),
            sku: sku.to_owned(),
            unit: Some("HOURS".to_owned()),
            cloud_provider: Some("AWS".to_owned()),
            tags: vec![
                ("env".to_owned(), "prod".to_owned()),
                ("team".to_owned(), "é".to_owned()),
            ],
        };
        let linked = "6a7b8c9d0e1f5f1b2c3d4e5f";
        let support = SkuKey {
            project_id: None,
            project_name: None,
            cluster_name: None,
            unit: None,
            cloud_provider: None,
            tags: Vec::new(),
            ..key(linked, "ATLAS_SUPPORT")
        };
        let data = InvoiceData {
            skus: vec![
                SkuSeries {
                    key: key(ORG, "ATLAS_AWS_INSTANCE_M30"),
                    month_to_date_micros: 123_450_000,
                    quantity_nanos: 120_500_000_000,
                    last_day_micros: 24_690_000,
                },
                SkuSeries {
                    key: key(ORG, "CREDIT"),
                    month_to_date_micros: -5_000_000,
                    quantity_nanos: 0,
                    last_day_micros: 0,
                },
                SkuSeries {
                    key: support,
                    month_to_date_micros: 49_000_000,
                    quantity_nanos: 1_000_000_000,
                    last_day_micros: -1,
                },
            ],
            prices: vec![
                UnitPrice {
                    org_id: ORG.to_owned(),
                    sku: "ATLAS_AWS_INSTANCE_M30".to_owned(),
                    unit: Some("HOURS".to_owned()),
                    micros: 1_020_000,
                },
                UnitPrice {
                    org_id: linked.to_owned(),
                    sku: "ATLAS_SUPPORT".to_owned(),
                    unit: None,
                    micros: 49_000_000,
                },
            ],
            last_day_start: 1_793_836_800,
            org_month_to_date_micros: [
                (ORG.to_owned(), 118_450_000),
                (linked.to_owned(), 49_000_000),
            ]
            .into_iter()
            .collect(),
            items: 412,
        };
        let item = LineItem {
            sku: "ATLAS_AWS_INSTANCE_M30".to_owned(),
            start: 1_793_750_400,
            end: Some(1_793_836_800),
            quantity_nanos: 24_000_000_000,
            unit: Some("HOURS".to_owned()),
            unit_price_micros: Some(1_020_000),
            total_cents: 2_448,
            discount_cents: 0,
            tier_lower_nanos: Some(0),
            project_id: Some("111111111111111111111111".to_owned()),
            project_name: None,
            cluster_name: Some("prod".to_owned()),
            cloud_provider: None,
            tags: vec![("team".to_owned(), "search".to_owned())],
        };
        let described = LineItem {
            sku: "AWS Data Transfer Same Region".to_owned(),
            end: None,
            unit: None,
            unit_price_micros: None,
            total_cents: -3,
            discount_cents: 7,
            tier_lower_nanos: None,
            project_id: None,
            cluster_name: None,
            tags: Vec::new(),
            ..item.clone()
        };
        let t = |s: u64| UNIX_EPOCH + Duration::from_secs(s) + Duration::from_nanos(987_654);
        InvoiceState {
            fingerprint: 0x0123_4567_89ab_cdef,
            status: KeptSourceStatus {
                up: false,
                last_success: Some(t(1_793_900_000)),
                duration: Some(Duration::from_micros(1_234_567)),
            },
            data: Some(Arc::new(data)),
            closed: Some((m(10), Arc::new(vec![item, described]))),
        }
    }

    /// The state with its invoice part, encoded.
    fn with_invoices(tags: &TagLabels) -> Vec<u8> {
        let mut state = sample(tags);
        state.invoices = Some(invoice_sample());
        encode(&state).expect("encodes")
    }

    fn series_of(q: &QueryState) -> Vec<RenderedSeries> {
        q.series.to_vec()
    }

    /// What is encoded decodes to the same state: ids, names, tags and last seen times,
    /// statuses, series with their label text, closed months with their ids.
    #[test]
    fn a_state_decodes_to_what_was_encoded() {
        let tags = TagLabels::new("t", ["team", "env"]).expect("valid");
        let state = sample(&tags);
        let bytes = encode(&state).expect("encodes");
        let back = decode(&bytes, &tags).expect("decodes");
        assert_eq!(back.org_id, state.org_id);
        assert_eq!(back.written_at, state.written_at);
        assert_eq!(back.known, state.known);
        let (q, want) = (&back.queries[0], &state.queries[0]);
        assert_eq!(
            (&q.name, q.fingerprint, &q.status, q.window),
            (&want.name, want.fingerprint, &want.status, want.window)
        );
        assert_eq!(series_of(q), series_of(want));
        let tagged: Vec<&RenderedSeries> = q
            .series
            .iter()
            .filter(|s| s.labels.contains("tag_team=\"search\""))
            .collect();
        assert_eq!(tagged.len(), 2, "both months of the tagged cluster");
        let (c, w) = (&q.closed[0], &want.closed[0]);
        assert_eq!((c.month, c.read_at, &c.ids), (w.month, w.read_at, &w.ids));
        assert_eq!(c.series, w.series);
        // The label set of both months is stored once, and shared again once decoded.
        assert!(tagged[0].series.key.shares(&tagged[1].series.key));
    }

    /// Every bad file is refused with the reason: shorter than a header, another file, a
    /// newer or unknown format, truncated, with bytes after its data, garbled.
    #[test]
    fn every_bad_file_is_refused_with_its_reason() {
        let tags = TagLabels::new("t", ["team", "env"]).expect("valid");
        let good = encode(&sample(&tags)).expect("encodes");
        let with = |edit: &dyn Fn(&mut Vec<u8>)| {
            let mut b = good.clone();
            edit(&mut b);
            decode(&b, &tags).expect_err("refused")
        };
        let data = (good.len() - HEADER_LEN) as u64;
        assert_eq!(with(&|b| b.truncate(10)), DecodeError::Short { len: 10 });
        assert_eq!(with(&|b| b[0] = b'X'), DecodeError::Magic);
        assert_eq!(
            decode(b"{}", &tags).expect_err("refused"),
            DecodeError::Magic
        );
        assert_eq!(
            decode(b"", &tags).expect_err("refused"),
            DecodeError::Short { len: 0 }
        );
        assert_eq!(
            with(&|b| b[8..12].copy_from_slice(&3u32.to_le_bytes())),
            DecodeError::Newer { found: 3 }
        );
        assert_eq!(
            with(&|b| b[8..12].copy_from_slice(&0u32.to_le_bytes())),
            DecodeError::Unknown { found: 0 }
        );
        assert_eq!(
            with(&|b| b.truncate(b.len() - 5)),
            DecodeError::Truncated {
                want: data,
                have: data - 5
            }
        );
        // Format 1 had nothing after its data.
        assert_eq!(
            with(&|b| {
                b[8..12].copy_from_slice(&1u32.to_le_bytes());
                b.extend_from_slice(b"xyz");
            }),
            DecodeError::Trailing { extra: 3 }
        );
        let garbled = with(&|b| {
            let i = b.len() / 2;
            b[i] ^= 0x40;
        });
        assert!(matches!(garbled, DecodeError::Checksum { .. }), "{garbled}");
        assert!(garbled.to_string().starts_with("garbled: "), "{garbled}");
        assert!(
            DecodeError::Newer { found: 3 }
                .to_string()
                .contains("newer release")
        );
    }

    /// The invoice part decodes to what was encoded: the SKU series with every label and tag,
    /// unit prices, the last day, each org's month to date, the item count, the source's
    /// status to the nanosecond, and the closed invoice's items with their month; and the
    /// queries beside it are untouched.
    #[test]
    fn an_invoice_part_decodes_to_what_was_encoded() {
        let tags = TagLabels::new("t", ["team", "env"]).expect("valid");
        let back = decode(&with_invoices(&tags), &tags).expect("decodes");
        assert_eq!(back.invoices_error, None);
        assert_eq!(back.invoices, Some(invoice_sample()));
        let want = sample(&tags);
        assert_eq!(series_of(&back.queries[0]), series_of(&want.queries[0]));
        assert_eq!(back.known, want.known);
        let none = InvoiceState {
            data: None,
            closed: None,
            status: KeptSourceStatus::default(),
            ..invoice_sample()
        };
        let mut state = sample(&tags);
        state.invoices = Some(none.clone());
        let back = decode(&encode(&state).expect("encodes"), &tags).expect("decodes");
        assert_eq!(back.invoices, Some(none), "a source that never succeeded");
    }

    /// A file written by the first release with `--storage.path` (format 1, committed as it
    /// was written: the demo's first org, two months) is read, not set aside: its ids and
    /// every query with its status and series, and no invoice part. Written again, it is
    /// format 2 and reads back the same.
    #[test]
    fn a_format_1_file_is_read_with_its_queries_and_no_invoice_part() {
        let v1 = include_bytes!("testdata/org-v1.state");
        assert_eq!(le_u32(&v1[8..12]), 1, "the fixture is format 1");
        let tags = TagLabels::default();
        let state = decode(v1, &tags).expect("format 1 is read");
        assert_eq!(state.org_id, "669f604a963f760000000019");
        assert!(state.written_at.is_some());
        assert!(!state.known.projects.is_empty() && !state.known.clusters.is_empty());
        assert_eq!(
            state
                .queries
                .iter()
                .map(|q| q.name.as_str())
                .collect::<Vec<_>>(),
            ["services", "projects", "clusters"]
        );
        for q in &state.queries {
            assert!(q.status.up && q.status.last_success.is_some(), "{}", q.name);
            assert!(!q.series.is_empty() && q.window.is_some(), "{}", q.name);
        }
        assert_eq!(
            (state.invoices.as_ref(), state.invoices_error.as_ref()),
            (None, None)
        );
        let again = encode(&state).expect("encodes");
        assert_eq!(le_u32(&again[8..12]), FORMAT_VERSION);
        let back = decode(&again, &tags).expect("decodes");
        for (a, b) in back.queries.iter().zip(&state.queries) {
            assert_eq!(
                (&a.name, &a.status, a.window),
                (&b.name, &b.status, b.window)
            );
            assert_eq!(series_of(a), series_of(b));
        }
        assert_eq!(back.known, state.known);
    }

    /// A bad invoice section (garbled, truncated, overlong, or with a right checksum over
    /// data that refers to a string it does not hold) loses only the invoice part: the file
    /// decodes with every query, and says why the invoice part was not read.
    #[test]
    fn a_bad_invoice_section_loses_only_the_invoice_part() {
        let tags = TagLabels::new("t", ["team", "env"]).expect("valid");
        let good = with_invoices(&tags);
        let main = HEADER_LEN + usize::try_from(le_u64(&good[12..20])).expect("fits");
        let want = sample(&tags);
        let read = |b: &[u8]| {
            let state = decode(b, &tags).expect("the main data decodes");
            assert_eq!(state.queries.len(), 1);
            assert_eq!(series_of(&state.queries[0]), series_of(&want.queries[0]));
            assert_eq!(state.known, want.known);
            assert!(state.invoices.is_none());
            state.invoices_error.expect("says why")
        };
        let mut garbled = good.clone();
        let last = garbled.len() - 1;
        garbled[last] ^= 0x40;
        assert!(matches!(read(&garbled), DecodeError::Checksum { .. }));
        let section = (good.len() - main - 12) as u64;
        assert_eq!(
            read(&good[..good.len() - 4]),
            DecodeError::Truncated {
                want: section,
                have: section - 4
            }
        );
        assert_eq!(
            read(&good[..main + 5]),
            DecodeError::Truncated { want: 12, have: 5 }
        );
        assert_eq!(
            read(&[&good[..], b"xy"].concat()),
            DecodeError::Trailing { extra: 2 }
        );
        // A section whose checksum is right, over a SKU naming string 99 of none.
        let wire = invoices::tests::dangling();
        let mut b = good[..main].to_vec();
        b.extend_from_slice(&(wire.len() as u64).to_le_bytes());
        b.extend_from_slice(&crc32fast::hash(&wire).to_le_bytes());
        b.extend_from_slice(&wire);
        assert!(
            matches!(read(&b), DecodeError::Invalid(ref m) if m.contains("string 99")),
            "{:?}",
            decode(&b, &tags).map(|s| s.invoices_error)
        );
        // The main data garbled is still the whole file's loss.
        let mut b = good.clone();
        b[HEADER_LEN + 3] ^= 0x40;
        assert!(matches!(
            decode(&b, &tags),
            Err(DecodeError::Checksum { .. })
        ));
    }

    /// Data whose checksum is right but which does not decode, or refers to a string it does
    /// not hold, is refused too: the checksum guards against the disk, not against a bug.
    #[test]
    fn data_that_does_not_decode_is_refused() {
        let tags = TagLabels::default();
        let junk = seal([vec![0u8; HEADER_LEN], vec![0xff; 16]].concat());
        assert!(matches!(decode(&junk, &tags), Err(DecodeError::Payload(_))));
        let wire = Wire {
            org_id: Cow::Borrowed(ORG),
            written_at_ns: 0,
            strings: Vec::new(),
            keys: Vec::new(),
            id_sets: Vec::new(),
            projects: vec![WireKnown {
                id: 5,
                name: 0,
                project: 0,
                tags: Vec::new(),
                last_seen_ns: 0,
            }],
            clusters: Vec::new(),
            queries: Vec::new(),
        };
        let bytes = seal(postcard::to_extend(&wire, vec![0u8; HEADER_LEN]).expect("encodes"));
        assert_eq!(
            decode(&bytes, &tags).expect_err("refused"),
            DecodeError::Invalid("string 5 of 0".to_owned())
        );
    }
}
