# innserve container image: the daemon and the demo models, on debian:bookworm-slim.
#
#   podman build --format docker -t localhost/innserve:latest .      (or docker build)
#   podman run --rm -p 8080:8080 localhost/innserve:latest
#   podman run --rm -p 8080:8080 -v ./my-models:/models:ro localhost/innserve:latest
#
# Configuration is by INNSERVE_* variables (INNSERVE_HOST, INNSERVE_PORT, INNSERVE_MODELS,
# and every other flag of `innserve --help`).  /models is a volume; the demo models are baked
# in there, so a fresh named volume starts with them, and a bind mount replaces them.
# `--format docker` keeps the HEALTHCHECK (the OCI image format has no field for it).
#
# A bearer token (every request but the health probes then needs it) comes from a secret
# mounted as a file, never from the image or a variable's value:
#   podman secret create innserve-token ./token
#   podman run --rm -p 8080:8080 --secret innserve-token,uid=10001,mode=0400 \
#       -e INNSERVE_AUTH_TOKEN_FILE=/run/secrets/innserve-token localhost/innserve:latest
# HTTPS: mount a certificate and key and set INNSERVE_TLS_CERT / INNSERVE_TLS_KEY; the
# HEALTHCHECK then only checks that the port accepts connections (bash speaks no TLS).
# Without a registry, deploy/base-image.sh makes debian:bookworm-slim locally (debootstrap).

ARG BASE=debian:bookworm-slim

# ---- build: compiler and -dev packages, `make build/innserve` -------------------------
FROM ${BASE} AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
        gcc make pkg-config libc6-dev libopenblas-dev libcjson-dev libmicrohttpd-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Makefile ./
COPY engine engine
COPY proto proto
COPY server server
COPY ui ui
RUN make -j"$(nproc)" build/innserve \
 && strip build/innserve \
 && build/innserve --help >/dev/null

# ---- runtime: the binary, its runtime libraries and the models ------------------------
# innserve links libopenblas.so.0 only: the package's reference-BLAS/LAPACK alternatives
# (libblas.so.3, liblapack.so.3, 7.7 MB) are removed.
FROM ${BASE}
RUN apt-get update \
 && apt-get install -y --no-install-recommends libopenblas0-pthread libcjson1 libmicrohttpd12 \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/* /var/log/apt /var/log/dpkg.log \
 && rm -f /usr/lib/*/openblas-pthread/libblas.so.3 /usr/lib/*/openblas-pthread/liblapack.so.3 \
 && groupadd --gid 10001 innserve \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin innserve
COPY --from=build /src/build/innserve /usr/local/bin/innserve
COPY models/ /models/

ENV INNSERVE_HOST=0.0.0.0 \
    INNSERVE_PORT=8080 \
    INNSERVE_MODELS=/models
USER 10001:10001
VOLUME ["/models"]
EXPOSE 8080
STOPSIGNAL SIGTERM
# No curl in the image: bash's /dev/tcp speaks just enough HTTP to read the status line
# (/healthz answers without a bearer token).  With TLS on, a connection accepted is enough.
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
    CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/${INNSERVE_PORT} && { [ -n \"${INNSERVE_TLS_CERT:-}\" ] || { printf 'GET /healthz HTTP/1.0\\r\\nHost: localhost\\r\\n\\r\\n' >&3 && read -r -t 3 proto code rest <&3 && [ \"$code\" = 200 ]; }; }"]
ENTRYPOINT ["/usr/local/bin/innserve"]
