//! Build information, as Prometheus's own exporters give it: the version, the git commit
//! and the rustc version, set at build time by `build.rs`. `atlas_cost_build_info` and
//! `--version` read them from here.

/// The crate version, `0.1.0`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The git commit the binary was built from, or `unknown` when built outside git.
pub const REVISION: &str = env!("ATLAS_COST_EXPORTER_BUILD_REVISION");

/// The version of the rustc that built the binary, `1.91.0`.
pub const RUSTVERSION: &str = env!("ATLAS_COST_EXPORTER_BUILD_RUSTVERSION");

/// What `--version` prints after the program name.
pub const LONG: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (revision: ",
    env!("ATLAS_COST_EXPORTER_BUILD_REVISION"),
    ", rustversion: ",
    env!("ATLAS_COST_EXPORTER_BUILD_RUSTVERSION"),
    ")"
);

#[cfg(test)]
mod tests {
    use super::*;

    /// The build script hands over values that need no escaping in a label or a version line.
    #[test]
    fn build_values_are_plain() {
        for v in [REVISION, RUSTVERSION] {
            assert!(!v.is_empty());
            assert!(
                v.chars()
                    .all(|c| c.is_ascii_alphanumeric() || ".+_-".contains(c)),
                "{v}"
            );
        }
        assert!(LONG.starts_with(VERSION), "{LONG}");
    }
}
