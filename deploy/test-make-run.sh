#!/usr/bin/env bash
# deploy/test-make-run.sh — the README's first screen, from a fresh clone (CI: make test-deploy).
#
#   1. git clone this repository into a temporary directory;
#   2. run `make run` there in the background (installs what is missing, builds, serves
#      models/ on 127.0.0.1:8080);
#   3. wait for /readyz;
#   4. run the README's curl calls and compare their answers with the outputs the README
#      shows for them;
#   5. send SIGTERM to the daemon and check that it and `make run` exit 0.
#
# The README block it reads (the README and this test cannot drift apart):
#
#   <!-- BEGIN readme-curl -->
#   ```console
#   $ curl -s http://127.0.0.1:8080/v1/models
#   {"models":[...]}
#   $ curl -s http://127.0.0.1:8080/v1/models/ik_cinn/sample -H 'Content-Type: application/json' \
#       -d '{"y": [[1.5, 0.0]], "num_samples": 2, "seed": 1}'
#   {"model":"ik_cinn",...}
#   ```
#   <!-- END readme-curl -->
#
# Lines starting with "$ " are commands (a trailing backslash continues one on the next
# line); the lines after a command, up to the next command or the closing fence, are its
# output as the README shows it: the complete JSON answer.  Answers are compared as JSON:
# the same keys, strings and array lengths, numbers within 1e-4 relative (other CPUs may
# round the last float digits differently).  At least three commands are required.
#
# Options / environment:
#   --worktree            clone, then overlay this working tree's uncommitted and untracked
#                         (not ignored) files: test what is not committed yet
#   --print               print the commands' real answers in the README's format (to paste
#                         into the README) instead of comparing
#   INNSERVE_TEST_PORT    port to serve on (default 8080, the README's; the commands'
#                         :8080 is rewritten to it)
#   INNSERVE_TEST_README  the README to read the block from (default: README.md)
set -euo pipefail
SRC=$(cd "$(dirname "$0")/.." && pwd)
PORT=${INNSERVE_TEST_PORT:-8080}
README=${INNSERVE_TEST_README:-$SRC/README.md}
WORKTREE=0
PRINT=0
for a in "$@"; do
    case "$a" in
        --worktree) WORKTREE=1 ;;
        --print) PRINT=1 ;;
        *) echo "usage: $0 [--worktree] [--print]" >&2; exit 2 ;;
    esac
done
T0=$(date +%s)
log() { echo "test-make-run: [$(( $(date +%s) - T0 ))s] $*" >&2; }
die() { echo "test-make-run: FAIL: $*" >&2; exit 1; }

tmp=$(mktemp -d)
make_pid=""
cleanup() {
    local rc=$?
    if [ -n "$make_pid" ] && kill -0 "$make_pid" 2>/dev/null; then
        # the daemon is make's child (the recipe execs it): stop it, then make
        for c in $(pgrep -P "$make_pid" || true); do kill -TERM "$c" 2>/dev/null || true; done
        sleep 1
        kill -TERM "$make_pid" 2>/dev/null || true
    fi
    if [ $rc -ne 0 ] && [ -f "$tmp/run.log" ]; then
        echo "--- make run output (last 30 lines) ---" >&2
        tail -30 "$tmp/run.log" >&2
    fi
    rm -rf "$tmp"
    exit $rc
}
trap cleanup EXIT

command -v curl >/dev/null || die "curl is not installed (scripts/install-deps.sh installs it)"
command -v python3 >/dev/null || die "python3 is not installed"
grep -q '<!-- BEGIN readme-curl -->' "$README" 2>/dev/null \
    || die "$README has no <!-- BEGIN readme-curl --> block"
if curl -s -o /dev/null "http://127.0.0.1:$PORT/healthz" 2>/dev/null; then
    die "something already serves on 127.0.0.1:$PORT; stop it or set INNSERVE_TEST_PORT"
fi

# ---- 1. fresh clone -------------------------------------------------------------------
git clone -q "$SRC" "$tmp/repo" || die "git clone failed"
if [ $WORKTREE = 1 ]; then
    (cd "$SRC" && git ls-files -z -m -o --exclude-standard) \
        | (cd "$SRC" && tar --null -T - -cf -) | tar -C "$tmp/repo" -xf -
    (cd "$SRC" && git ls-files -z -d) | (cd "$tmp/repo" && xargs -0 -r rm -f --)
    log "cloned $SRC and overlaid its working tree"
else
    log "cloned $SRC at $(git -C "$tmp/repo" rev-parse --short HEAD)"
fi

# ---- 2. make run in the background -----------------------------------------------------
(cd "$tmp/repo" && INNSERVE_PORT=$PORT exec make run) >"$tmp/run.log" 2>&1 &
make_pid=$!

# ---- 3. ready --------------------------------------------------------------------------
ready=0
for _ in $(seq 1 1800); do             # building from scratch takes a while: up to 15 min
    kill -0 "$make_pid" 2>/dev/null || { wait "$make_pid" || true; die "make run exited before the daemon was ready"; }
    if curl -fsS -o /dev/null "http://127.0.0.1:$PORT/readyz" 2>/dev/null; then ready=1; break; fi
    sleep 0.5
done
[ $ready = 1 ] || die "/readyz on 127.0.0.1:$PORT did not answer 200"
daemon=$(pgrep -P "$make_pid" || true)
[ -n "$daemon" ] && [ "$(cat /proc/"$daemon"/comm 2>/dev/null)" = innserve ] \
    || die "cannot find the daemon as make's child (pid $daemon); does the run recipe exec it?"
log "make run: ready on 127.0.0.1:$PORT (daemon pid $daemon)"

# ---- 4. the README's curl calls ---------------------------------------------------------
python3 - "$README" "$PORT" "$PRINT" <<'EOF' || die "the README's curl calls do not give the README's answers"
import json, math, re, subprocess, sys

readme, port, mode_print = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
text = open(readme).read()
m = re.search(r"<!-- BEGIN readme-curl -->(.*?)<!-- END readme-curl -->", text, re.S)
if not m:
    sys.exit("no <!-- BEGIN readme-curl --> ... <!-- END readme-curl --> block in README.md")
block = m.group(1)
f = re.search(r"```[a-z]*\n(.*?)```", block, re.S)
if not f:
    sys.exit("the readme-curl block has no fenced code block")
cmds, cur, cont = [], None, False
for line in f.group(1).splitlines():
    if cont:
        cur["cmd"] += "\n" + line
        cont = line.endswith("\\")
    elif line.startswith("$ "):
        cur = {"cmd": line[2:], "out": []}
        cmds.append(cur)
        cont = line.endswith("\\")
    elif cur is not None:
        cur["out"].append(line)
if len(cmds) < 3:
    sys.exit("the readme-curl block has %d commands, expected at least 3" % len(cmds))

def same(a, b, path="$"):
    if isinstance(b, dict):
        if not isinstance(a, dict) or set(a) != set(b):
            return "%s: keys %s, README %s" % (path, sorted(a) if isinstance(a, dict) else type(a).__name__, sorted(b))
        for k in b:
            r = same(a[k], b[k], "%s.%s" % (path, k))
            if r:
                return r
        return None
    if isinstance(b, list):
        if not isinstance(a, list) or len(a) != len(b):
            return "%s: length %s, README %d" % (path, len(a) if isinstance(a, list) else type(a).__name__, len(b))
        for i, (x, y) in enumerate(zip(a, b)):
            r = same(x, y, "%s[%d]" % (path, i))
            if r:
                return r
        return None
    if isinstance(b, bool) or b is None or isinstance(b, str):
        return None if a == b else "%s: %r, README %r" % (path, a, b)
    if isinstance(b, (int, float)) and isinstance(a, (int, float)) and not isinstance(a, bool):
        if math.isclose(a, b, rel_tol=1e-4, abs_tol=1e-6):
            return None
    return "%s: %r, README %r" % (path, a, b)

bad = 0
for i, c in enumerate(cmds, 1):
    cmd = c["cmd"].replace(":8080", ":" + port)
    r = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=60)
    if mode_print:
        print("$ " + c["cmd"])
        print(r.stdout.rstrip("\n"))
        continue
    first = c["cmd"].splitlines()[0]
    if r.returncode != 0:
        print("  FAIL  %d. %s: exit %d %s" % (i, first, r.returncode, r.stderr.strip()), file=sys.stderr)
        bad += 1
        continue
    try:
        got = json.loads(r.stdout)
    except ValueError:
        print("  FAIL  %d. %s: the answer is not JSON: %.200s" % (i, first, r.stdout), file=sys.stderr)
        bad += 1
        continue
    try:
        want = json.loads("\n".join(c["out"]))
    except ValueError:
        print("  FAIL  %d. %s: the README's output for it is not one complete JSON answer"
              % (i, first), file=sys.stderr)
        bad += 1
        continue
    diff = same(got, want)
    if diff:
        print("  FAIL  %d. %s: %s" % (i, first, diff), file=sys.stderr)
        bad += 1
    else:
        print("  ok    %d. %s" % (i, first), file=sys.stderr)
sys.exit(1 if bad else 0)
EOF
[ $PRINT = 1 ] || log "the README's curl calls answer what the README shows"

# ---- 5. SIGTERM -------------------------------------------------------------------------
t=$(date +%s)
kill -TERM "$daemon"
rc=0
wait "$make_pid" || rc=$?
make_pid=""
[ $rc = 0 ] || die "after SIGTERM, make run exited with $rc (the daemon must drain and exit 0)"
grep -q '"event":"' "$tmp/run.log" || die "the daemon logged no JSON lines"
log "SIGTERM: daemon and make run exited 0 after $(( $(date +%s) - t ))s"
log "PASS"
