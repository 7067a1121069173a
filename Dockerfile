# syntax=docker/dockerfile:1
#
# No Docker engine runs in CI: .ci/replay-docker-build replays the build stage instead. It
# copies exactly what the COPY lines below copy (honouring .dockerignore) into an empty
# directory, runs the stage's cargo command there, follows the `install` into /out and the
# `COPY --from=build` into the runtime stage, and checks that ENTRYPOINT names the binary it
# installed. It refuses instructions and COPY forms it cannot follow, and its --self-test
# deletes each COPY in turn and expects the build to fail.
#
# Build:  docker build --build-arg ATLAS_COST_EXPORTER_REVISION=$(git rev-parse HEAD) \
#             -t atlas-cost-exporter .
# Run:    docker run --rm -p 9879:9879 -v atlas-cost-state:/var/lib/atlas-cost-exporter \
#             atlas-cost-exporter --demo

# ---- build ------------------------------------------------------------------
FROM rust:1-bookworm AS build
WORKDIR /src

# The git commit for atlas_cost_build_info and --version: .git is not in the build context
# (.dockerignore), so build.rs cannot ask git; without the argument the revision is `unknown`.
ARG ATLAS_COST_EXPORTER_REVISION

# rustls (ring) only: no OpenSSL headers are needed, just the image's C toolchain.
#
# Cargo reads every target the manifest declares before it builds anything: Cargo.toml declares
# the `pipeline` bench, so benches/pipeline.rs must be here even for `cargo build` (examples and
# tests are discovered, not declared, and stay out). build.rs sets the build information.
#
# Dependencies are cached by the BuildKit cache mounts below (the registry and target/), not by
# a dependency-only layer built from stub sources: cargo's own fingerprints in the cached
# target/ rebuild only what changed, a Cargo.toml or Cargo.lock edit included (a stub layer
# rebuilds every dependency then), and no stub has to be kept in step with each target the
# manifest declares (lib, bin, bench, build script). The cost: cache mounts stay on the
# builder that made them (`--cache-to` does not export them).
COPY Cargo.toml Cargo.lock build.rs ./
COPY benches/pipeline.rs ./benches/
COPY src ./src

# The registry and target caches persist between builds (BuildKit); the binary is copied out
# of the cached target directory in the same step, so the next stage can find it. `--bin`
# makes cargo fail when the binary target is missing: otherwise `install` could copy a stale
# binary left in the cache by an earlier build.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin atlas-cost-exporter \
    && install -D -m 0755 target/release/atlas-cost-exporter /out/atlas-cost-exporter \
    && install -d -m 0700 /out/state

# ---- runtime ----------------------------------------------------------------
# distroless/cc: glibc, libgcc, CA certificates; no shell, no package manager.
FROM gcr.io/distroless/cc-debian12:nonroot

COPY --from=build /out/atlas-cost-exporter /usr/local/bin/atlas-cost-exporter
# The state directory (--storage.path): distroless has no shell to mkdir or chown, so the empty
# directory made in the build stage (0700) is copied in owned by the non-root user. A volume
# mounted there starts as a copy of it (Docker); in Kubernetes, fsGroup 65532 makes it writable.
COPY --from=build --chown=65532:65532 /out/state /var/lib/atlas-cost-exporter

# The image already defaults to nonroot (uid/gid 65532); stated explicitly.
USER nonroot:nonroot

# What a restart must not lose: each org's last good data, closed months and ids seen.
VOLUME ["/var/lib/atlas-cost-exporter"]

EXPOSE 9879

# No HEALTHCHECK: distroless has no shell or curl to run one. Probe over HTTP instead, e.g. in
# Kubernetes: livenessProbe httpGet /healthz and readinessProbe httpGet /readyz on port 9879.
# Arguments given to `docker run` follow these; a later --storage.path overrides this one.
ENTRYPOINT ["/usr/local/bin/atlas-cost-exporter", "--storage.path", "/var/lib/atlas-cost-exporter"]
