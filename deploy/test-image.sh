#!/usr/bin/env bash
# deploy/test-image.sh — build the container image with podman and check it for real
# (CI: `make test-deploy`).  Runs as root on a Debian 12 machine; no registry needed.
#
#   1. installs podman, runc, debootstrap and curl when missing; writes
#      /etc/containers/containers.conf when absent;
#   2. checks that podman can run a container here at all (fails loudly with the reason);
#   3. makes the base image debian:bookworm-slim with debootstrap (deploy/base-image.sh,
#      cached: skipped when it exists);
#   4. builds the Dockerfile (--format docker, so the HEALTHCHECK is kept) and reports the
#      image size;
#   5. starts the container with the port published (read-only root, all capabilities
#      dropped, as deploy/k8s runs it), waits for /readyz, samples a posterior through the
#      published port and checks the JSON, checks the process is not root, runs the
#      HEALTHCHECK, then sends SIGTERM and checks the exit code is 0;
#   6. starts it again with a bind-mounted /models holding one model and checks that this
#      replaces the baked-in demo models;
#   7. removes its containers (the images stay as a build cache).
#
# Environment: INNSERVE_IMAGE (localhost/innserve:latest), INNSERVE_TEST_PORT (18080),
# INNSERVE_OCI_RUNTIME (runc: crun refuses hybrid cgroup v1/v2 hosts),
# INNSERVE_TEST_REMOVE_IMAGE=1 to remove the built image at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE=${INNSERVE_IMAGE:-localhost/innserve:latest}
PORT=${INNSERVE_TEST_PORT:-18080}
RUNTIME=${INNSERVE_OCI_RUNTIME:-runc}
BASE=localhost/debian:bookworm-slim
NAME=innserve-test-$$
NAME2=innserve-test-models-$$
T0=$(date +%s)
step_t=$T0

log() { echo "test-image: $*" >&2; }
die() { echo "test-image: FAIL: $*" >&2; exit 1; }
step() {
    local now; now=$(date +%s)
    log "[$((now - T0))s, +$((now - step_t))s] $*"
    step_t=$now
}

tmp=$(mktemp -d)
cleanup() {
    local rc=$?
    if [ $rc -ne 0 ] && command -v podman >/dev/null; then
        for n in "$NAME" "$NAME2"; do
            if podman container exists "$n" 2>/dev/null; then
                log "--- logs of $n (last 30 lines) ---"
                podman logs --tail 30 "$n" 2>&1 | sed 's/^/    /' >&2 || true
            fi
        done
    fi
    if command -v podman >/dev/null; then
        podman rm -f -v -t 0 "$NAME" "$NAME2" >/dev/null 2>&1 || true
        if [ "${INNSERVE_TEST_REMOVE_IMAGE:-0}" = 1 ]; then
            podman rmi -f "$IMAGE" >/dev/null 2>&1 || true
        fi
    fi
    rm -rf "$tmp"
    exit $rc
}
trap cleanup EXIT

# ---- 1. packages and configuration ---------------------------------------------------
[ "$(id -u)" -eq 0 ] || die "must run as root: debootstrap and rootful podman builds " \
    "(--isolation=chroot) need it (CI runs as root; locally: sudo make test-deploy)"
missing=()
for p in podman runc debootstrap iptables curl python3; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq || die "apt-get update failed"
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
        || die "apt-get install ${missing[*]} failed"
fi
if [ ! -f /etc/containers/containers.conf ]; then
    # default_ulimits = []: podman's default nofile ulimit cannot be set inside some VMs.
    mkdir -p /etc/containers
    printf '[containers]\ndefault_ulimits = []\n' >/etc/containers/containers.conf
    log "wrote /etc/containers/containers.conf"
elif ! grep -q '^[[:space:]]*default_ulimits' /etc/containers/containers.conf; then
    log "note: /etc/containers/containers.conf has no default_ulimits line; if containers" \
        "fail with a setrlimit error, add 'default_ulimits = []' under [containers]"
fi
command -v "$RUNTIME" >/dev/null || die "OCI runtime '$RUNTIME' not found (INNSERVE_OCI_RUNTIME)"
step "podman $(podman --version | awk '{print $3}'), runtime $RUNTIME"

# ---- 2. base image, and can podman run containers here? ------------------------------
bash deploy/base-image.sh || die "could not make the base image (deploy/base-image.sh)"
step "base image ready"
if ! out=$(podman run --rm --pull=never --runtime "$RUNTIME" --network none "$BASE" true 2>&1); then
    reason="podman cannot run a container on this machine:"$'\n'"$out"
    case "$out" in
        *cgroup*) reason+=$'\n'"(cgroups: try INNSERVE_OCI_RUNTIME=runc or crun, or a cgroup v2 host)";;
        *namespace*|*unshare*) reason+=$'\n'"(user/mount namespaces unavailable: containers need them)";;
        *ulimit*|*rlimit*) reason+=$'\n'"(set default_ulimits = [] under [containers] in /etc/containers/containers.conf)";;
    esac
    die "$reason"
fi
step "podman runs containers"

# ---- 3. build ---------------------------------------------------------------------------
ls models/*.safetensors >/dev/null 2>&1 || die "no models/*.safetensors to bake in (make models)"
podman build --isolation=chroot --format docker --pull=never \
    --build-arg BASE=debian:bookworm-slim -t "$IMAGE" -f Dockerfile . >"$tmp/build.log" 2>&1 \
    || { tail -40 "$tmp/build.log" >&2; die "podman build failed"; }
size=$(podman image inspect --format '{{.Size}}' "$IMAGE")
step "built $IMAGE: $size bytes ($((size / 1000000)) MB)"

# The image's configuration is what the deployment files rely on.
cfg=$(podman image inspect --format \
    'user={{.Config.User}} stop={{.Config.StopSignal}} ports={{range $k, $v := .Config.ExposedPorts}}{{$k}} {{end}}' \
    "$IMAGE")
log "image config: $cfg"
case "$cfg" in *"user=10001:10001"*) ;; *) die "image user is not 10001:10001: $cfg";; esac
case "$cfg" in *"stop=SIGTERM"*) ;; *) die "image stop signal is not SIGTERM: $cfg";; esac
case "$cfg" in *"8080/tcp"*) ;; *) die "image does not expose 8080/tcp: $cfg";; esac
hc=$(podman image inspect --format '{{json .Config.Healthcheck}}' "$IMAGE" 2>/dev/null || true)
case "$hc" in *healthz*) ;; *) die "image has no HEALTHCHECK on /healthz (built without --format docker?): $hc";; esac
podman image inspect --format '{{range .Config.Env}}{{println .}}{{end}}' "$IMAGE" >"$tmp/env"
for kv in INNSERVE_HOST=0.0.0.0 INNSERVE_PORT=8080 INNSERVE_MODELS=/models; do
    grep -qx "$kv" "$tmp/env" || die "image environment lacks $kv"
done

# ---- 4. run, ready, sample ------------------------------------------------------------
run_opts=(--runtime "$RUNTIME" --pull=never --read-only --cap-drop=ALL
          --security-opt no-new-privileges --health-interval=disable)
# (podman logs errors about systemd healthcheck timers where systemd is not PID 1: shown
# only when something fails; the HEALTHCHECK itself is run below with podman healthcheck run)
podman run -d --name "$NAME" "${run_opts[@]}" -p "127.0.0.1:$PORT:8080" "$IMAGE" \
    >/dev/null 2>"$tmp/run.err" \
    || { cat "$tmp/run.err" >&2; die "podman run failed (port publishing needs iptables and the CNI plugins)"; }
url=http://127.0.0.1:$PORT
ready=0
for _ in $(seq 1 120); do
    if [ "$(podman inspect --format '{{.State.Running}}' "$NAME")" != true ]; then
        die "the container exited before it was ready (exit code $(podman inspect --format '{{.State.ExitCode}}' "$NAME"))"
    fi
    if curl -fsS -o /dev/null "$url/readyz" 2>/dev/null; then ready=1; break; fi
    sleep 0.5
done
[ $ready = 1 ] || die "/readyz did not answer 200 through the published port within 60 s"
step "ready on $url (published port)"

curl -fsS "$url/v1/models" >"$tmp/models.json" || die "GET /v1/models failed"
curl -fsS -H 'Content-Type: application/json' \
    -d '{"y": [[1.5, 0.0], [1.8, 0.3]], "num_samples": 200, "seed": 7}' \
    "$url/v1/models/ik_cinn/sample" >"$tmp/sample.json" || die "POST /v1/models/ik_cinn/sample failed"
python3 - "$tmp/models.json" "$tmp/sample.json" <<'EOF' || die "the answers are not what they should be"
import json, math, sys
models = json.load(open(sys.argv[1]))["models"]
names = {m["name"]: m for m in models}
for want in ("ik_cinn", "ik_inn", "ik_mlp"):
    assert want in names, "model %s missing from /v1/models: %s" % (want, sorted(names))
    assert names[want]["state"] == "READY", "%s is %s" % (want, names[want]["state"])
a = json.load(open(sys.argv[2]))
assert a["model"] == "ik_cinn" and a["seed"] == 7 and len(a["sha256"]) == 64, a.keys()
s = a["samples"]
assert len(s) == 2 and all(len(o) == 200 for o in s), "samples shape"
assert all(len(r) == 4 and all(math.isfinite(v) for v in r) for o in s for r in o), "rows"
def f(x):
    a1, a2 = x[1], x[1] + x[2]
    a3 = a2 + x[3]
    return (0.5 * math.cos(a1) + 0.5 * math.cos(a2) + math.cos(a3),
            x[0] + 0.5 * math.sin(a1) + 0.5 * math.sin(a2) + math.sin(a3))
for y, o in zip([(1.5, 0.0), (1.8, 0.3)], s):
    e = sorted(math.hypot(f(x)[0] - y[0], f(x)[1] - y[1]) for x in o)
    assert e[len(e) // 2] < 0.1, "median re-simulation error %.3f for y=%s" % (e[len(e) // 2], y)
print("test-image: models %s; posterior samples 2x200x4, median re-simulation error ok"
      % ", ".join(sorted(names)), file=sys.stderr)
EOF
step "posterior sampled through the published port"

# ---- 5. non-root, healthcheck ---------------------------------------------------------
uid=$(podman exec "$NAME" id -u) || die "podman exec id -u failed"
[ "$uid" != 0 ] || die "the daemon runs as root inside the container"
huser=$(podman top "$NAME" user huser | awk 'NR > 1 {print $1 "/" $2}' | sort -u | tr '\n' ' ')
case " $huser" in *" root/"*|*"/root "*) die "a container process runs as root: $huser";; esac
log "container processes run as (user/host user): $huser"
podman healthcheck run "$NAME" >/dev/null 2>&1 \
    || die "the image's HEALTHCHECK fails against a ready daemon"
step "non-root (uid $uid), HEALTHCHECK healthy"

# ---- 6. SIGTERM: drain (an in-flight request finishes) and exit 0 --------------------
# A large request (1 observation x 1e6 samples, ~45 MB of JSON, seconds of CPU) is in
# flight when SIGTERM arrives: it must still be answered in full, then the daemon exits 0.
curl -sS -o "$tmp/big.json" -w '%{http_code}' -H 'Content-Type: application/json' \
    -d '{"y": [[1.8, 0.2]], "num_samples": 1000000, "seed": 3}' \
    "$url/v1/models/ik_cinn/sample" >"$tmp/big.code" 2>"$tmp/big.err" &
curl_pid=$!
inflight=0
for _ in $(seq 1 100); do                # until it is in flight (the gauge counts /metrics too)
    n=$(curl -fsS "$url/metrics" 2>/dev/null | awk '$1 == "innserve_in_flight_requests" {print $2}')
    if [ "${n:-0}" -ge 2 ]; then inflight=1; break; fi
    sleep 0.05
done
[ $inflight = 1 ] || die "the large request never showed up in innserve_in_flight_requests"
t_stop=$(date +%s)
podman stop -t 40 "$NAME" >/dev/null 2>>"$tmp/run.err" || die "podman stop failed"
wait "$curl_pid" || true
code=$(podman inspect --format '{{.State.ExitCode}}' "$NAME")
podman logs "$NAME" 2>&1 | grep -E '"event":"(shutdown|draining|exit)"' | sed 's/^/    /' >&2 || true
[ "$code" = 0 ] || die "exit code after SIGTERM is $code, not 0"
[ "$(cat "$tmp/big.code")" = 200 ] \
    || die "the request in flight at SIGTERM got HTTP $(cat "$tmp/big.code") $(head -c 300 "$tmp/big.json") $(cat "$tmp/big.err")"
python3 -c 'import json,sys; a=json.load(open(sys.argv[1])); assert len(a["samples"][0]) == 1000000' \
    "$tmp/big.json" || die "the request in flight at SIGTERM was not answered in full"
step "SIGTERM: the in-flight request (1e6 samples) answered in full, exit code 0 after $(( $(date +%s) - t_stop ))s"

# ---- 7. a bind-mounted /models replaces the demo models --------------------------------
mkdir -p "$tmp/models"
cp models/ik_mlp.safetensors "$tmp/models/"
chmod 755 "$tmp" "$tmp/models"; chmod 644 "$tmp/models/ik_mlp.safetensors"
podman run -d --name "$NAME2" "${run_opts[@]}" -p "127.0.0.1:$PORT:8080" \
    -v "$tmp/models:/models:ro" "$IMAGE" >/dev/null 2>>"$tmp/run.err" \
    || { cat "$tmp/run.err" >&2; die "podman run with -v .../models failed"; }
ok=0
for _ in $(seq 1 60); do
    if curl -fsS "$url/v1/models" >"$tmp/models2.json" 2>/dev/null \
        && curl -fsS -o /dev/null "$url/readyz" 2>/dev/null; then ok=1; break; fi
    sleep 0.5
done
[ $ok = 1 ] || die "the container with a mounted /models did not become ready"
python3 -c 'import json,sys; n=[m["name"] for m in json.load(open(sys.argv[1]))["models"]]; assert n == ["ik_mlp"], n' \
    "$tmp/models2.json" || die "a mounted /models did not replace the baked-in models"
podman stop -t 40 "$NAME2" >/dev/null 2>>"$tmp/run.err"
[ "$(podman inspect --format '{{.State.ExitCode}}' "$NAME2")" = 0 ] || die "second container: exit code not 0"
step "a mounted /models replaces the demo models"

log "PASS in $(( $(date +%s) - T0 ))s; image $IMAGE $((size / 1000000)) MB"
