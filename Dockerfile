# syntax=docker/dockerfile:1
#
# No Docker engine runs in CI: the build step below is the same `cargo build --release --locked`
# that .ci/run exercises.
#
# Build:  docker build -t atlas-cost-exporter .
# Run:    docker run --rm -p 9879:9879 atlas-cost-exporter --demo

# ---- build ------------------------------------------------------------------
FROM rust:1-bookworm AS build
WORKDIR /src

# rustls (ring) only: no OpenSSL headers are needed, just the image's C toolchain.
COPY Cargo.toml Cargo.lock ./
COPY src ./src

# The registry and target caches persist between builds (BuildKit); the binary is copied out
# of the cached target directory in the same step, so the next stage can find it.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
    && install -D -m 0755 target/release/atlas-cost-exporter /out/atlas-cost-exporter

# ---- runtime ----------------------------------------------------------------
# distroless/cc: glibc, libgcc, CA certificates; no shell, no package manager.
FROM gcr.io/distroless/cc-debian12:nonroot

COPY --from=build /out/atlas-cost-exporter /usr/local/bin/atlas-cost-exporter

# The image already defaults to nonroot (uid/gid 65532); stated explicitly.
USER nonroot:nonroot

EXPOSE 9879

# No HEALTHCHECK: distroless has no shell or curl to run one. Probe over HTTP instead, e.g. in
# Kubernetes: livenessProbe httpGet /healthz and readinessProbe httpGet /readyz on port 9879.
ENTRYPOINT ["/usr/local/bin/atlas-cost-exporter"]
