//! The invoice section of a state file (format 2 on): what is kept of the org's invoice
//! source, after the main data, with a length and a checksum of its own.
//!
//! ```text
//! offset  size  what (from the end of the main data)
//!      0     8  length of the section's data, little-endian
//!      8     4  CRC-32 (IEEE) of that data, little-endian
//!     12     m  the data: postcard of `WireInvoices`, its strings in a table of its own
//! ```
//!
//! The section is checked and decoded apart from the main data: a bad section loses only
//! the invoice source's kept state, never the Cost Explorer's.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{DecodeError, le_u32, le_u64, month, month_index, nanos, time};
use crate::invoice::{InvoiceData, LineItem, SkuKey, SkuSeries, UnitPrice};
use crate::state::{InvoiceState, KeptSourceStatus};

/// Length and checksum.
const SECTION_HEADER: usize = 12;

/// The section's data. Field order is the format: never reorder, only add at a new version.
#[derive(Serialize, Deserialize)]
struct WireInvoices<'a> {
    fingerprint: u64,
    up: bool,
    last_success_ns: Option<u64>,
    duration_ns: Option<u64>,
    #[serde(borrow)]
    strings: Vec<Cow<'a, str>>,
    data: Option<WireData>,
    /// (month, items).
    closed: Option<(u32, Vec<WireItem>)>,
}

#[derive(Serialize, Deserialize)]
struct WireData {
    skus: Vec<WireSku>,
    /// (org, SKU, unit plus one, micro-dollars).
    prices: Vec<(u32, u32, u32, i64)>,
    last_day_start: i64,
    /// (org, micro-dollars).
    org_month_to_date: Vec<(u32, i64)>,
    items: u64,
}

/// A SKU series: org, project id, project name, cluster name, SKU, unit and cloud provider
/// as string indexes (plus one, 0 for none, where optional), its tags as string pairs.
#[derive(Serialize, Deserialize)]
struct WireSku {
    labels: [u32; 7],
    tags: Vec<(u32, u32)>,
    month_to_date_micros: i64,
    quantity_nanos: i64,
    last_day_micros: i64,
}

/// A closed item: its SKU, then unit, project id, project name, cluster name and cloud
/// provider as string indexes plus one.
#[derive(Serialize, Deserialize)]
struct WireItem {
    sku: u32,
    start: i64,
    end: Option<i64>,
    quantity_nanos: i64,
    unit_price_micros: Option<i64>,
    total_cents: i64,
    discount_cents: i64,
    tier_lower_nanos: Option<i64>,
    labels: [u32; 5],
    tags: Vec<(u32, u32)>,
}

/// The section's string table, being written.
#[derive(Default)]
struct Strings<'a> {
    list: Vec<&'a str>,
    index: HashMap<&'a str, u32>,
}

impl<'a> Strings<'a> {
    fn get(&mut self, s: &'a str) -> u32 {
        if let Some(i) = self.index.get(s) {
            return *i;
        }
        let i = u32::try_from(self.list.len()).unwrap_or(u32::MAX);
        self.list.push(s);
        self.index.insert(s, i);
        i
    }

    fn optional(&mut self, s: Option<&'a String>) -> u32 {
        s.map_or(0, |s| self.get(s) + 1)
    }

    fn pairs(&mut self, tags: &'a [(String, String)]) -> Vec<(u32, u32)> {
        tags.iter()
            .map(|(k, v)| (self.get(k), self.get(v)))
            .collect()
    }
}

fn wire_data<'a>(d: &'a InvoiceData, s: &mut Strings<'a>) -> WireData {
    WireData {
        skus: d
            .skus
            .iter()
            .map(|x| {
                let k = &x.key;
                WireSku {
                    labels: [
                        s.get(&k.org_id),
                        s.optional(k.project_id.as_ref()),
                        s.optional(k.project_name.as_ref()),
                        s.optional(k.cluster_name.as_ref()),
                        s.get(&k.sku),
                        s.optional(k.unit.as_ref()),
                        s.optional(k.cloud_provider.as_ref()),
                    ],
                    tags: s.pairs(&k.tags),
                    month_to_date_micros: x.month_to_date_micros,
                    quantity_nanos: x.quantity_nanos,
                    last_day_micros: x.last_day_micros,
                }
            })
            .collect(),
        prices: d
            .prices
            .iter()
            .map(|p| {
                (
                    s.get(&p.org_id),
                    s.get(&p.sku),
                    s.optional(p.unit.as_ref()),
                    p.micros,
                )
            })
            .collect(),
        last_day_start: d.last_day_start,
        org_month_to_date: d
            .org_month_to_date_micros
            .iter()
            .map(|(org, micros)| (s.get(org), *micros))
            .collect(),
        items: d.items,
    }
}

fn wire_item<'a>(i: &'a LineItem, s: &mut Strings<'a>) -> WireItem {
    WireItem {
        sku: s.get(&i.sku),
        start: i.start,
        end: i.end,
        quantity_nanos: i.quantity_nanos,
        unit_price_micros: i.unit_price_micros,
        total_cents: i.total_cents,
        discount_cents: i.discount_cents,
        tier_lower_nanos: i.tier_lower_nanos,
        labels: [
            s.optional(i.unit.as_ref()),
            s.optional(i.project_id.as_ref()),
            s.optional(i.project_name.as_ref()),
            s.optional(i.cluster_name.as_ref()),
            s.optional(i.cloud_provider.as_ref()),
        ],
        tags: s.pairs(&i.tags),
    }
}

/// Appends the section of `state` to `out`.
///
/// # Errors
/// Only if postcard refuses a value, which the types here do not allow.
pub(super) fn encode(state: &InvoiceState, out: Vec<u8>) -> Result<Vec<u8>, String> {
    let mut s = Strings::default();
    let data = state.data.as_deref().map(|d| wire_data(d, &mut s));
    let closed = state.closed.as_ref().map(|(m, items)| {
        (
            month_index(*m),
            items.iter().map(|i| wire_item(i, &mut s)).collect(),
        )
    });
    let wire = WireInvoices {
        fingerprint: state.fingerprint,
        up: state.status.up,
        last_success_ns: state.status.last_success.map(nanos),
        duration_ns: state
            .status
            .duration
            .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)),
        strings: s.list.iter().map(|x| Cow::Borrowed(*x)).collect(),
        data,
        closed,
    };
    let start = out.len();
    let mut out = out;
    out.extend_from_slice(&[0u8; SECTION_HEADER]);
    let mut out = postcard::to_extend(&wire, out).map_err(|e| e.to_string())?;
    let body = start + SECTION_HEADER;
    let len = (out.len() - body) as u64;
    let crc = crc32fast::hash(&out[body..]);
    out[start..start + 8].copy_from_slice(&len.to_le_bytes());
    out[start + 8..body].copy_from_slice(&crc.to_le_bytes());
    Ok(out)
}

/// Reads the section's strings back.
struct Reader<'w> {
    strings: &'w [Cow<'w, str>],
}

impl Reader<'_> {
    fn get(&self, i: u32) -> Result<String, DecodeError> {
        self.strings
            .get(i as usize)
            .map(|s| s.to_string())
            .ok_or_else(|| {
                DecodeError::Invalid(format!(
                    "invoice section: string {i} of {}",
                    self.strings.len()
                ))
            })
    }

    fn optional(&self, i: u32) -> Result<Option<String>, DecodeError> {
        match i {
            0 => Ok(None),
            i => self.get(i - 1).map(Some),
        }
    }

    fn pairs(&self, tags: &[(u32, u32)]) -> Result<Vec<(String, String)>, DecodeError> {
        tags.iter()
            .map(|(k, v)| Ok((self.get(*k)?, self.get(*v)?)))
            .collect()
    }

    fn data(&self, d: &WireData) -> Result<InvoiceData, DecodeError> {
        let skus = d
            .skus
            .iter()
            .map(|x| {
                let [org, project_id, project_name, cluster, sku, unit, provider] = x.labels;
                Ok(SkuSeries {
                    key: SkuKey {
                        org_id: self.get(org)?,
                        project_id: self.optional(project_id)?,
                        project_name: self.optional(project_name)?,
                        cluster_name: self.optional(cluster)?,
                        sku: self.get(sku)?,
                        unit: self.optional(unit)?,
                        cloud_provider: self.optional(provider)?,
                        tags: self.pairs(&x.tags)?,
                    },
                    month_to_date_micros: x.month_to_date_micros,
                    quantity_nanos: x.quantity_nanos,
                    last_day_micros: x.last_day_micros,
                })
            })
            .collect::<Result<_, DecodeError>>()?;
        let prices = d
            .prices
            .iter()
            .map(|(org, sku, unit, micros)| {
                Ok(UnitPrice {
                    org_id: self.get(*org)?,
                    sku: self.get(*sku)?,
                    unit: self.optional(*unit)?,
                    micros: *micros,
                })
            })
            .collect::<Result<_, DecodeError>>()?;
        let org_month_to_date_micros = d
            .org_month_to_date
            .iter()
            .map(|(org, micros)| Ok((self.get(*org)?, *micros)))
            .collect::<Result<BTreeMap<_, _>, DecodeError>>()?;
        Ok(InvoiceData {
            skus,
            prices,
            last_day_start: d.last_day_start,
            org_month_to_date_micros,
            items: d.items,
        })
    }

    fn item(&self, i: &WireItem) -> Result<LineItem, DecodeError> {
        let [unit, project_id, project_name, cluster, provider] = i.labels;
        Ok(LineItem {
            sku: self.get(i.sku)?,
            start: i.start,
            end: i.end,
            quantity_nanos: i.quantity_nanos,
            unit: self.optional(unit)?,
            unit_price_micros: i.unit_price_micros,
            total_cents: i.total_cents,
            discount_cents: i.discount_cents,
            tier_lower_nanos: i.tier_lower_nanos,
            project_id: self.optional(project_id)?,
            project_name: self.optional(project_name)?,
            cluster_name: self.optional(cluster)?,
            cloud_provider: self.optional(provider)?,
            tags: self.pairs(&i.tags)?,
        })
    }
}

/// The invoice state in `section` (everything after the main data).
///
/// # Errors
/// A [`DecodeError`] naming what is wrong with the section: shorter or longer than its
/// length says, a checksum that does not match, data that does not decode or refers to a
/// string it does not hold.
pub(super) fn decode(section: &[u8]) -> Result<InvoiceState, DecodeError> {
    if section.len() < SECTION_HEADER {
        return Err(DecodeError::Truncated {
            want: SECTION_HEADER as u64,
            have: section.len() as u64,
        });
    }
    let want = le_u64(&section[0..8]);
    let have = (section.len() - SECTION_HEADER) as u64;
    if have < want {
        return Err(DecodeError::Truncated { want, have });
    }
    if have > want {
        return Err(DecodeError::Trailing { extra: have - want });
    }
    let data = &section[SECTION_HEADER..];
    let (want, found) = (le_u32(&section[8..12]), crc32fast::hash(data));
    if found != want {
        return Err(DecodeError::Checksum { want, found });
    }
    let (wire, rest): (WireInvoices<'_>, &[u8]) = postcard::take_from_bytes(data)
        .map_err(|e| DecodeError::Payload(format!("invoice section: {e}")))?;
    if !rest.is_empty() {
        return Err(DecodeError::Payload(format!(
            "invoice section: {} bytes left after the data",
            rest.len()
        )));
    }
    let r = Reader {
        strings: &wire.strings,
    };
    let data = match &wire.data {
        Some(d) => Some(Arc::new(r.data(d)?)),
        None => None,
    };
    let closed = match &wire.closed {
        Some((m, items)) => Some((
            month(*m)?,
            Arc::new(
                items
                    .iter()
                    .map(|i| r.item(i))
                    .collect::<Result<Vec<_>, _>>()?,
            ),
        )),
        None => None,
    };
    Ok(InvoiceState {
        fingerprint: wire.fingerprint,
        status: KeptSourceStatus {
            up: wire.up,
            last_success: wire.last_success_ns.map(time),
            duration: wire.duration_ns.map(Duration::from_nanos),
        },
        data,
        closed,
    })
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// The data of a section with one SKU series whose org is string 99, of none.
    pub(in crate::state::codec) fn dangling() -> Vec<u8> {
        let wire = WireInvoices {
            fingerprint: 1,
            up: true,
            last_success_ns: Some(1),
            duration_ns: None,
            strings: Vec::new(),
            data: Some(WireData {
                skus: vec![WireSku {
                    labels: [99, 0, 0, 0, 99, 0, 0],
                    tags: Vec::new(),
                    month_to_date_micros: 1,
                    quantity_nanos: 0,
                    last_day_micros: 0,
                }],
                prices: Vec::new(),
                last_day_start: 0,
                org_month_to_date: Vec::new(),
                items: 1,
            }),
            closed: None,
        };
        postcard::to_allocvec(&wire).expect("encodes")
    }
}
