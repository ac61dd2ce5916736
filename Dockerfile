# syntax=docker/dockerfile:1
# sfmc-proxy: multi-stage build, small non-root runtime image.
#   docker build -t sfmc-proxy .
#   docker run --rm -p 127.0.0.1:8080:8080 \
#     -v "$PWD/proxy.container.toml:/etc/sfmc-proxy/proxy.toml:ro" \
#     -e SFMC_CLIENT_ID -e SFMC_CLIENT_SECRET -e SFMC_PROXY_KEY sfmc-proxy
# The mounted config must listen on 0.0.0.0:8080 (the container's loopback is
# not the host's) and so needs inbound_keys or allow_unauthenticated_remote.

# Build and runtime share Debian 12 (bookworm), so the binary's glibc matches.
# The slim Rust image carries gcc, which aws-lc-sys (the TLS crypto) needs.
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
# Dependencies first, so a code change does not rebuild them: the workspace's
# manifests with placeholder sources for both packages (the proxy and
# crates/sfmc-fake, which `demo` uses). Cargo wants the declared bench's file
# to exist too; it is never built here, so its placeholder stays.
COPY Cargo.toml Cargo.lock ./
COPY crates/sfmc-fake/Cargo.toml crates/sfmc-fake/
RUN mkdir -p src benches crates/sfmc-fake/src \
 && echo 'fn main() {}' > src/main.rs \
 && echo 'fn main() {}' > benches/hot_path.rs \
 && touch src/lib.rs crates/sfmc-fake/src/lib.rs \
 && cargo build --release --locked \
 && rm -rf src crates/sfmc-fake/src
COPY src ./src
COPY crates ./crates
COPY proxy.toml ./
# Touch so cargo sees the real sources as newer than the placeholder build.
RUN touch src/main.rs src/lib.rs crates/sfmc-fake/src/lib.rs \
 && cargo build --release --locked --bin sfmc-proxy \
 && mkdir -p /state

# Distroless: glibc, CA certificates and a non-root user, no shell or package manager.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/sfmc-proxy /usr/local/bin/sfmc-proxy
COPY --from=build /src/proxy.toml /etc/sfmc-proxy/proxy.example.toml
# Refresh tokens of Web/Public App tenants (token.store_file): owned by the
# runtime user, so a named volume mounted here starts writable.
COPY --from=build --chown=65532:65532 /state /var/lib/sfmc-proxy
LABEL org.opencontainers.image.title="sfmc-proxy" \
      org.opencontainers.image.description="Authenticating reverse proxy for Salesforce Marketing Cloud APIs"
# State (token.store_file's default, the token cache) under
# $XDG_STATE_HOME/sfmc-proxy: /var/lib/sfmc-proxy.
ENV SFMC_PROXY_CONFIG=/etc/sfmc-proxy/proxy.toml \
    XDG_STATE_HOME=/var/lib
# 65532 is distroless's "nonroot" user.
USER 65532:65532
EXPOSE 8080
# No HEALTHCHECK: the image has no HTTP client. Probe GET /_proxy/health from
# the orchestrator (it needs neither an allowed Host nor an inbound key).
ENTRYPOINT ["/usr/local/bin/sfmc-proxy"]
CMD ["serve"]
