# chronomerge: multi-stage image. The build stage installs the same Debian
# packages the README installs; the runtime stage carries only the binary
# and its runtime libraries, and runs as an unprivileged user.
FROM debian:bookworm AS build
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
       build-essential cmake ninja-build pkg-config \
       libuv1-dev nlohmann-json3-dev doctest-dev libfmt-dev libssl-dev libsimdjson-dev librdkafka-dev libcli11-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cmake -S . -B /build -G Ninja -DCMAKE_BUILD_TYPE=Release -DCHRONOMERGE_BUILD_TESTS=OFF \
       -DCMAKE_INSTALL_PREFIX=/usr \
    && cmake --build /build -j2 \
    && DESTDIR=/install cmake --install /build

FROM debian:bookworm-slim
LABEL org.opencontainers.image.title="chronomerge" \
      org.opencontainers.image.description="Merges live timestamped NDJSON feeds into one chronological stream, with backpressure" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.base.name="debian:bookworm-slim"
RUN apt-get update \
    && apt-get install -y --no-install-recommends libuv1 libfmt9 libssl3 libsimdjson14 librdkafka1 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --no-create-home --home-dir /var/lib/chronomerge --shell /usr/sbin/nologin chronomerge \
    && mkdir -p /etc/chronomerge /var/lib/chronomerge \
    && chown chronomerge:chronomerge /var/lib/chronomerge
COPY --from=build /install/usr/bin/chronomerge /usr/bin/chronomerge
# The default configuration is the demo, listening on all interfaces so the
# published ports work; mount your own at /etc/chronomerge/chronomerge.json.
COPY config/docker-demo.json /etc/chronomerge/chronomerge.json
USER chronomerge
WORKDIR /var/lib/chronomerge
# 7070: merged stream for clients; 7090: the same over HTTP; 9464: /metrics
# and /healthz.
EXPOSE 7070 7090 9464
# The binary probes its own /healthz: the image needs no curl.
HEALTHCHECK --interval=15s --timeout=5s --start-period=5s --retries=3 \
    CMD ["/usr/bin/chronomerge", "--healthcheck", "http://127.0.0.1:9464/healthz"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/bin/chronomerge"]
CMD ["--config", "/etc/chronomerge/chronomerge.json"]
