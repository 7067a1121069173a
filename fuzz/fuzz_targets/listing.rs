//! Listings of projects, clusters and Flex clusters (one parser for the three pages).
//!
//! Properties: the heap stays within `parse_bound` of the page; a page is read when, and
//! only when, it has the documented shape (an object; `results` an array of objects whose
//! `id` and `name` are strings or null; `totalCount` a whole number), else it is a named
//! decode error; what is read is what an independent JSON reader finds: every item counted,
//! only Atlas ids listed, in order, with their names and the tags that have a string key and
//! value.

#![no_main]

use atlas_cost_exporter::atlas::fuzzing::{Tag, listing_page};
use atlas_cost_exporter_fuzz::alloc::{Meter, parse_bound};
use atlas_cost_exporter_fuzz::json::{self, J};
use libfuzzer_sys::fuzz_target;

#[global_allocator]
static HEAP: Meter = Meter::new();

fn is_atlas_id(s: &str) -> bool {
    s.len() == 24
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn infinite_inside(j: &J) -> bool {
    match j {
        J::Num(n) => n.parse::<f64>().map_or(true, f64::is_infinite),
        J::Arr(items) => items.iter().any(infinite_inside),
        J::Obj(entries) => entries.iter().any(|(_, v)| infinite_inside(v)),
        _ => false,
    }
}

/// `None` unless a field is absent, null or a string.
fn opt_str(j: Option<&J>) -> Option<Option<String>> {
    match j {
        None | Some(J::Null) => Some(None),
        Some(J::Str(s)) => Some(Some(s.clone())),
        Some(_) => None,
    }
}

fn tags(j: Option<&J>) -> Vec<Tag> {
    let Some(J::Arr(items)) = j else {
        return Vec::new();
    };
    items
        .iter()
        .filter_map(|t| match (t.last("key"), t.last("value")) {
            (Some(J::Str(k)), Some(J::Str(v))) if !k.is_empty() => Some(Tag {
                key: k.clone(),
                value: v.clone(),
            }),
            _ => None,
        })
        .collect()
}

/// The page as documented: `(listed, skipped, items, totalCount)`, or `None` for a page of
/// another shape.
type Page = (Vec<(String, String, Vec<Tag>)>, usize, usize, Option<u64>);

fn page(j: &J) -> Option<Page> {
    let J::Obj(_) = j else { return None };
    // serde's derive refuses a duplicate of a field it reads.
    if j.count("results") > 1 || j.count("totalCount") > 1 {
        return None;
    }
    let total = match j.last("totalCount") {
        None | Some(J::Null) => None,
        Some(J::Num(n)) => Some(n.parse::<u64>().ok()?),
        Some(_) => return None,
    };
    let items = match j.last("results") {
        None => Vec::new(),
        Some(J::Arr(items)) => items.clone(),
        Some(_) => return None,
    };
    let mut listed = Vec::new();
    let mut skipped = 0;
    for item in &items {
        let J::Obj(_) = item else { return None };
        if ["id", "name", "tags"].iter().any(|k| item.count(k) > 1) {
            return None;
        }
        // serde_json refuses a number too large for an f64 wherever it builds a value.
        if item.last("tags").is_some_and(infinite_inside) {
            return None;
        }
        let id = opt_str(item.last("id"))?;
        let name = opt_str(item.last("name"))?;
        match id {
            Some(id) if is_atlas_id(&id) => {
                listed.push((id, name.unwrap_or_default(), tags(item.last("tags"))));
            }
            _ => skipped += 1,
        }
    }
    Some((listed, skipped, items.len(), total))
}

fuzz_target!(|data: &[u8]| {
    let base = HEAP.start();
    let got = listing_page(data);
    let peak = HEAP.peak_since(base);
    assert!(
        peak <= parse_bound(data.len()),
        "{peak} bytes for a {}-byte page",
        data.len()
    );

    let read = json::read(data);
    if read.string_issue || read.depth > 100 {
        return;
    }
    let want = read.value.as_ref().and_then(page);
    let show = String::from_utf8_lossy(data);
    match (want, got) {
        (None, Err(e)) => assert!(!e.is_empty()),
        (Some((listed, skipped, items, total)), Ok(got)) => {
            assert_eq!(got.listed, listed, "{show}");
            assert_eq!(got.skipped, skipped, "{show}");
            assert_eq!(got.items, items, "{show}");
            assert_eq!(got.total_count, total, "{show}");
        }
        (want, got) => panic!("{show}: the documented shape says {want:?}, read {got:?}"),
    }
});
