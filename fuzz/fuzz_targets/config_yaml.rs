//! The YAML configuration file (`--config.file`): orgs, queries with their cardinality
//! controls, budgets and tag labels, validated as at start-up.
//!
//! Properties: a file is a configuration or one error line that names the key (or flag) that
//! is wrong, never a crash; what is accepted holds the documented invariants (Atlas org ids,
//! unique query names per org, valid months, positive budgets with unique names).
//! Files naming secret files (`*_file`) are skipped: the target reads nothing from disk.

#![no_main]

use std::collections::HashMap;
use std::sync::OnceLock;

use atlas_cost_exporter::cli::{Cli, Flags};
use atlas_cost_exporter::config::fuzz_file;
use clap::Parser as _;
use libfuzzer_sys::fuzz_target;

fn flags() -> &'static Flags {
    static FLAGS: OnceLock<Flags> = OnceLock::new();
    FLAGS.get_or_init(|| {
        Cli::try_parse_from(["atlas-cost-exporter"])
            .map(|c| c.flags)
            .unwrap_or_else(|e| panic!("the default flags parse: {e}"))
    })
}

/// The error starts with the key (`orgs[0].queries[1].name`, `budgets[2].scope.match.team`,
/// `tag_labels`) or the flag (`--config.file`) that is wrong.
fn names_a_key(msg: &str) -> bool {
    ["--config.file: ", "orgs[", "budgets[", "tag_labels"]
        .iter()
        .any(|k| msg.starts_with(k))
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if text.contains("_file") {
        return;
    }
    let env: HashMap<&str, &str> = HashMap::from([
        ("MONGODB_ATLAS_CLIENT_ID", "mdb_sa_id_x"),
        ("MONGODB_ATLAS_CLIENT_SECRET", "mdb_sa_sk_y"),
        ("SECRET", "s3cr3t"),
    ]);
    match fuzz_file(text, flags(), &env) {
        Err(e) => {
            let msg = e.to_string();
            assert!(!msg.contains('\n'), "one line: {msg:?}");
            assert!(names_a_key(&msg), "names the key: {msg:?}");
        }
        Ok((orgs, budgets)) => {
            for (i, o) in orgs.iter().enumerate() {
                assert!(atlas_cost_exporter::config::is_atlas_id(&o.id));
                assert!(orgs[..i].iter().all(|p| p.id != o.id), "org ids unique");
                assert!(!o.queries.is_empty());
                for (j, q) in o.queries.iter().enumerate() {
                    assert!((1..=18).contains(&q.months));
                    assert!(o.queries[..j].iter().all(|p| p.name != q.name));
                    assert!(!q.name.is_empty() && q.name.len() <= 64);
                }
            }
            for (i, b) in budgets.iter().enumerate() {
                assert!(b.amount_micros > 0);
                assert!(budgets[..i].iter().all(|c| c.name != b.name));
                assert!(!b.scope.is_empty() || !b.matchers.is_empty());
            }
        }
    }
});
