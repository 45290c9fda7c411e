# syntax=docker/dockerfile:1
#
# popularity container image.
#
#   docker build -t popularity .
#   docker run --rm -p 8080:8080 \
#     -e POPULARITY__KAFKA__BROKERS=kafka:9092 \
#     -e POPULARITY__STORE__REDIS_URL=redis://redis:6379 \
#     popularity serve --role all
#
# The builder compiles librdkafka from source through the rdkafka crate: that
# needs a C compiler, make and perl (no cmake), and OpenSSL's headers for TLS
# to Kafka (SASL_SSL) and Redis (rediss://). The runtime image holds the
# binary, OpenSSL and CA certificates only, and runs as uid 10001.

FROM rust:1-bookworm AS build
# Already part of the rust image; named here because the build depends on them.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc make perl pkg-config libssl-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# Cache mounts keep the registry and compiled dependencies (librdkafka takes
# minutes) between builds; the binary is copied out of the cached target dir.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin popularity \
 && install -D -m 0755 target/release/popularity /out/popularity

FROM debian:bookworm-slim
LABEL org.opencontainers.image.title="popularity" \
      org.opencontainers.image.description="Event-driven popularity rankings for news sites: Kafka in, time-decayed scores in Redis, top-N lists over HTTP." \
      org.opencontainers.image.licenses="MIT"
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libssl3 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 popularity \
 && useradd --system --uid 10001 --gid 10001 --no-create-home \
      --home-dir /nonexistent --shell /usr/sbin/nologin popularity
COPY --from=build /out/popularity /usr/local/bin/popularity
# Fails the build if a shared library the binary needs is missing here.
RUN ["popularity", "--version"]
USER 10001:10001
EXPOSE 8080
ENTRYPOINT ["popularity"]
CMD ["serve"]
