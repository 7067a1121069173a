//! The exporter-toolkit web configuration (`--web.config.file`): TLS and basic auth.
//!
//! Properties: a file is a configuration or one error line starting `--web.config.file: `,
//! never a crash or a hang (bcrypt costs included). Relative paths resolve in an empty
//! directory; files with a `/` in them are skipped, so nothing outside it is read.

#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use atlas_cost_exporter::web_config::WebConfig;
use libfuzzer_sys::fuzz_target;

fn empty_dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("atlas-fuzz-web-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        dir
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if text.contains('/') || text.contains('\\') {
        return;
    }
    match WebConfig::parse(text, empty_dir()) {
        Ok(_) => {}
        Err(e) => {
            let msg = e.to_string();
            assert!(msg.starts_with("--web.config.file: "), "{msg:?}");
            assert!(!msg.contains('\n'), "one line: {msg:?}");
        }
    }
});
