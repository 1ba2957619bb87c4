# Multi-stage build: compile in the Rust image, run in a slim Debian as an unprivileged user.
#   docker build -t cauldron .
#   docker run -p 1883:1883 -p 8083:8083 -v cauldron-data:/data cauldron
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p cauldron && strip target/release/cauldron

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --home-dir /data --shell /usr/sbin/nologin cauldron \
    && mkdir -p /data && chown cauldron:cauldron /data
COPY --from=build /src/target/release/cauldron /usr/local/bin/cauldron
USER cauldron
VOLUME ["/data"]
EXPOSE 1883 8083
# The orchestrator's stop signal (SIGTERM) triggers the graceful shutdown.
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=3s CMD ["/bin/bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/8083 && printf 'GET /healthz HTTP/1.0\\r\\n\\r\\n' >&3 && grep -q ' 200 ' <&3"]
ENTRYPOINT ["cauldron", "serve", "--listen", "0.0.0.0:1883", "--http", "0.0.0.0:8083", "--data-dir", "/data"]
