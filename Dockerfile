# syntax=docker/dockerfile:1
# Multi-stage build of isolation-collector, with Devo's volume layout:
#   /devo-collector/{config,certs,state}, CONFIG_FILE (a name under config/, as in Devo's images).
# Build:  docker build -t isolation-collector .
# Run:    docker run --rm -v $PWD/config:/devo-collector/config:ro -v $PWD/certs:/devo-collector/certs:ro \
#           -v $PWD/state:/devo-collector/state -e CONFIG_FILE=config.yaml -e ISOLATION_API_KEY isolation-collector

FROM rust:1.88-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
# The workspace's other member (the API simulator) must be present for cargo to load the
# workspace; `--no-default-features` leaves it (and the `demo` subcommand) out of the binary.
COPY crates ./crates
RUN cargo build --release --locked --no-default-features --bin isolation-collector \
 && strip target/release/isolation-collector

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates tini \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 1001 devo \
 && useradd --uid 1001 --gid devo --home-dir /devo-collector --no-create-home --shell /usr/sbin/nologin devo \
 && mkdir -p /devo-collector/config /devo-collector/certs /devo-collector/state \
 && chown devo:devo /devo-collector/state
COPY --from=build /src/target/release/isolation-collector /usr/local/bin/isolation-collector
WORKDIR /devo-collector
USER devo
VOLUME ["/devo-collector/config", "/devo-collector/certs", "/devo-collector/state"]
ENV CONFIG_FILE=config.yaml
# tini forwards SIGTERM to the collector, which then shuts down gracefully.
ENTRYPOINT ["/usr/bin/tini", "--", "isolation-collector"]
CMD ["run"]
