#!/usr/bin/env bash
# deploy/test-compose.sh — run deploy/compose.yaml for real (CI: make test-compose):
# innserve and the example simulator, which posts observations, receives posterior samples
# and checks their re-simulation error, sending the bearer token of the compose secret;
# passes when the simulator exits 0, the published port answers 401 without the token and
# 200 with it (the healthcheck's /readyz without it), and innserve then stops on SIGTERM
# with exit code 0.  Makes deploy/secrets/innserve-token (not in git) when it is missing.
#
# Uses podman-compose (Debian package) with rootful podman, as deploy/test-image.sh does;
# installs podman-compose and the CNI dnsname plugin (service names as host names) when
# missing.  Root only.  INNSERVE_HOST_PORT (default 18081) is the published port.
set -euo pipefail
cd "$(dirname "$0")/.."
T0=$(date +%s)
PROJECT=innserve-compose-test
export INNSERVE_HOST_PORT=${INNSERVE_HOST_PORT:-18081}
log() { echo "test-compose: [$(( $(date +%s) - T0 ))s] $*" >&2; }
die() { echo "test-compose: FAIL: $*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "must run as root (rootful podman, as deploy/test-image.sh)"
missing=()
for p in podman runc podman-compose golang-github-containernetworking-plugin-dnsname; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
        || die "apt-get install ${missing[*]} failed"
fi

# podman-compose cannot pass --runtime: a private containers.conf selects runc (crun
# refuses hybrid cgroup hosts) and keeps the ulimit setting deploy/test-image.sh needs.
tmp=$(mktemp -d)
printf '[containers]\ndefault_ulimits = []\n[engine]\nruntime = "%s"\n' \
    "${INNSERVE_OCI_RUNTIME:-runc}" >"$tmp/containers.conf"
export CONTAINERS_CONF=$tmp/containers.conf
pc() { podman-compose -p "$PROJECT" -f deploy/compose.yaml "$@"; }
cleanup() {
    local rc=$?
    if [ $rc -ne 0 ]; then
        for c in "${PROJECT}_innserve_1" "${PROJECT}_simulator_1"; do
            podman logs --tail 20 "$c" 2>&1 | sed "s/^/    $c: /" >&2 || true
        done
    fi
    pc down -v >/dev/null 2>&1 || true
    podman network rm -f "${PROJECT}_default" >/dev/null 2>&1 || true
    rm -rf "$tmp"
    exit $rc
}
trap cleanup EXIT

# the token secret: group 10001 (both containers' group) may read it, no one else
secret=deploy/secrets/innserve-token
if [ ! -s "$secret" ]; then
    mkdir -p deploy/secrets
    od -An -tx1 -N32 /dev/urandom | tr -d ' \n' >"$secret"
    log "made $secret"
fi
chgrp 10001 "$secret" && chmod 640 "$secret"

bash deploy/base-image.sh >/dev/null || die "could not make the base image"
# --format docker keeps the image's HEALTHCHECK (what deploy/test-image.sh builds too)
podman-compose -p "$PROJECT" -f deploy/compose.yaml --podman-build-args "--format docker --pull=never" \
    build >"$tmp/build.log" 2>&1 || { tail -30 "$tmp/build.log" >&2; die "podman-compose build failed"; }
log "built the innserve and simulator images"
pc up -d >"$tmp/up.log" 2>&1 || { tail -30 "$tmp/up.log" >&2; die "podman-compose up failed"; }
sim=${PROJECT}_simulator_1
inn=${PROJECT}_innserve_1
podman container exists "$inn" || { tail -30 "$tmp/up.log" >&2; die "no innserve container"; }
for _ in $(seq 1 240); do
    [ "$(podman inspect --format '{{.State.Running}}' "$sim" 2>/dev/null)" = false ] && break
    sleep 0.5
done
code=$(podman inspect --format '{{.State.ExitCode}}' "$sim")
podman logs "$sim" 2>&1 | sed 's/^/    /' >&2
[ "$code" = 0 ] || die "the simulator exited with $code"
curl -fsS "http://127.0.0.1:$INNSERVE_HOST_PORT/readyz" >/dev/null \
    || die "innserve is not ready on the published port $INNSERVE_HOST_PORT"
models_url=http://127.0.0.1:$INNSERVE_HOST_PORT/v1/models
[ "$(curl -s -o /dev/null -w '%{http_code}' "$models_url")" = 401 ] \
    || die "GET /v1/models without the token is not 401"
[ "$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $(cat "$secret")" \
      "$models_url")" = 200 ] || die "GET /v1/models with the token is not 200"
log "the token is required, and the probes answer without it"
log "the simulator's posterior samples re-simulate its observations"
podman stop -t 40 "$inn" >/dev/null 2>&1 || die "podman stop failed"
[ "$(podman inspect --format '{{.State.ExitCode}}' "$inn")" = 0 ] || die "innserve did not exit 0 on SIGTERM"
log "PASS (innserve exited 0 on SIGTERM)"
