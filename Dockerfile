# syntax=docker/dockerfile:1.7
# Repo Runner: one image for every service (`reporunner serve [--service NAME]`)
# and for the pods the runner's Kubernetes backend starts.
#
#   docker build -t reporunner:0.1.0 .
#   docker run -p 50051:50051 -p 9464:9464 reporunner:0.1.0
#
# Stages: chef (cargo-chef from crates.io) -> planner (the dependency recipe)
# -> dashboard (npm) -> builder (dependencies cooked in their own cached layer, then the
# workspace) -> probe (grpc-health-probe, a Go module, for HEALTHCHECK) ->
# runtime (Debian slim, non-root).

ARG RUST_VERSION=1.95.0
ARG GO_VERSION=1.26
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS chef
# cargo-chef computes a recipe from the manifests only, so the dependency
# layer below is rebuilt only when Cargo.toml/Cargo.lock change.
RUN cargo install cargo-chef --locked --version 0.1.78
WORKDIR /src

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM node:20-${DEBIAN_RELEASE}-slim AS dashboard
# The web dashboard (npm packages from the registry, TypeScript clients
# generated from proto/ by buf), embedded into the binary by its build script.
WORKDIR /src/dashboard
COPY dashboard/package.json dashboard/package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY buf.yaml /src/
COPY proto/ /src/proto/
COPY dashboard/ ./
RUN npm run build

FROM chef AS builder
# onig (tokenizers) and LMDB (heed) compile C; protox needs no protoc.
# Unpinned apt packages (DL3008): Debian stable drops superseded versions, so
# a pin breaks the build at the next point release; the base tag pins the
# release instead.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends g++ make \
 && rm -rf /var/lib/apt/lists/*
COPY --from=planner /src/recipe.json recipe.json
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    cargo chef cook --release --locked --recipe-path recipe.json -p reporunner
COPY . .
COPY --from=dashboard /src/dashboard/dist dashboard/dist
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    cargo build --release --locked -p reporunner \
 && install -m 0755 target/release/reporunner /usr/local/bin/reporunner

FROM golang:${GO_VERSION}-${DEBIAN_RELEASE} AS probe
# A static grpc.health.v1 client for HEALTHCHECK (Kubernetes uses its native
# gRPC probes instead; see k8s/).
RUN CGO_ENABLED=0 GOBIN=/out go install github.com/grpc-ecosystem/grpc-health-probe@v0.4.61

FROM debian:${DEBIAN_RELEASE}-slim AS runtime
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="reporunner" \
      org.opencontainers.image.description="Repo Runner: takes a code repository to a running, health-checked app (gRPC service mesh)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://example.invalid/reporunner" \
      org.opencontainers.image.base.name="docker.io/library/debian:${DEBIAN_RELEASE}-slim"

# What the agents call: git (source), Python with venv and Node with npm
# (dependency, runner, tester), bubblewrap (the runner's sandbox), util-linux's
# prlimit (rlimits; in the base image), CA certificates for HTTPS remotes and
# registries. Nothing else: no compilers, no curl, no package caches.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      bubblewrap ca-certificates git nodejs npm python3 python3-venv tini \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*

# uv from PyPI, in its own venv (Debian's Python refuses system-wide pip).
ARG UV_VERSION=0.13.8
RUN python3 -m venv /opt/uv \
 && /opt/uv/bin/pip install --no-cache-dir --disable-pip-version-check "uv==${UV_VERSION}" \
 && ln -s /opt/uv/bin/uv /usr/local/bin/uv \
 && uv --version

COPY --from=builder /usr/local/bin/reporunner /usr/local/bin/reporunner
COPY --from=probe /out/grpc-health-probe /usr/local/bin/grpc-health-probe

# A fixed non-root user (10001, as the Kubernetes manifests expect) owning
# only the data directory.
RUN groupadd --system --gid 10001 reporunner \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/reporunner --shell /usr/sbin/nologin reporunner \
 && mkdir -p /var/lib/reporunner /etc/reporunner \
 && chown 10001:10001 /var/lib/reporunner

ENV REPORUNNER_LISTEN=0.0.0.0:50051 \
    REPORUNNER_METRICS_LISTEN=0.0.0.0:9464 \
    REPORUNNER_DATA_DIR=/var/lib/reporunner \
    HOME=/var/lib/reporunner \
    PYTHONDONTWRITEBYTECODE=1

USER 10001:10001
WORKDIR /var/lib/reporunner
VOLUME ["/var/lib/reporunner"]
EXPOSE 50051 9464

HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
  CMD ["grpc-health-probe", "-addr=127.0.0.1:50051", "-connect-timeout=2s", "-rpc-timeout=2s"]

# tini reaps the process groups of apps that outlive their shell and passes
# SIGTERM on, so `serve` shuts down gracefully.
ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/reporunner"]
CMD ["serve"]
