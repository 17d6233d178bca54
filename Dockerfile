# syntax=docker/dockerfile:1
# Switchboard: one binary, built in three stages.
#   chef    - the Rust toolchain with cargo-chef
#   planner - reduces the workspace to its dependency recipe (recipe.json)
#   builder - builds the dependencies from the recipe alone (a layer Docker keeps until
#             Cargo.toml/Cargo.lock change), then the workspace itself
#   runtime - Debian slim with CA certificates and the binary, as an unprivileged user
ARG RUST_VERSION=1.95

FROM lukemathwalker/cargo-chef:latest-rust-${RUST_VERSION}-slim-bookworm AS chef
WORKDIR /src

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
COPY --from=planner /src/recipe.json recipe.json
# The build settings (the bundled SQLite's flags) apply to the cached dependencies too.
COPY .cargo .cargo
RUN cargo chef cook --release --locked --recipe-path recipe.json --bin switchboard
COPY . .
RUN cargo build --release --locked --bin switchboard \
 && cp target/release/switchboard /usr/local/bin/switchboard

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /app --create-home switchboard
COPY --from=builder /usr/local/bin/switchboard /usr/local/bin/switchboard
USER 10001
WORKDIR /app
ENV BIND=0.0.0.0:8080 LOG_FORMAT=json
EXPOSE 8080
# `switchboard serve` (web + in-process workers); fly.toml runs `serve --no-worker` and
# `worker` as separate process groups and `migrate` as the release command.
CMD ["switchboard", "serve"]
