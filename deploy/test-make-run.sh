#!/usr/bin/env bash
# deploy/test-make-run.sh — the README's first screen, from a fresh clone (CI: make test-deploy),
# or quickly against a built daemon (--bin).  `make test-docs` runs every example of every
# document the same way; this script adds the fresh clone and `make run`.
#
#   1. git clone this repository into a temporary directory;
#   2. run `make run` there in the background (installs what is missing, builds, serves
#      models/ on 127.0.0.1:8080);
#   3. wait for /readyz;
#   4. run the README's curl calls and compare their answers with the outputs the README
#      shows for them, exactly;
#   5. send SIGTERM to the daemon and check that it and `make run` exit 0.
#
# With --bin BIN, steps 1-2 are replaced by `BIN --models models --port 0` from this tree
# (no clone, no install, no build; the commands' :8080 is rewritten to the port it logs).
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
# output as the README shows it: the complete JSON answer.  Answers must be the README's
# exactly: the same JSON tokens in the same order, numbers compared as their text (0.5 is
# not 0.50); only whitespace between tokens may differ.
# The engine's answers are bit-reproducible on every CPU, so there is no tolerance.  At least
# three commands are required.
#
# Options / environment:
#   --bin BIN             serve models/ with this daemon instead of a clone's `make run`
#   --worktree            clone, then overlay this working tree's uncommitted and untracked
#                         (not ignored) files: test what is not committed yet
#   --print               print the commands' real answers in the README's format (to paste
#                         into the README) instead of comparing
#   INNSERVE_TEST_PORT    port to serve on (default 8080, the README's; 0 with --bin; the
#                         commands' :8080 is rewritten to it)
#   INNSERVE_TEST_README  the README to read the block from (default: README.md)
set -euo pipefail
SRC=$(cd "$(dirname "$0")/.." && pwd)
README=${INNSERVE_TEST_README:-$SRC/README.md}
WORKTREE=0
PRINT=0
BIN=""
while [ $# -gt 0 ]; do
    case "$1" in
        --worktree) WORKTREE=1 ;;
        --print) PRINT=1 ;;
        --bin) BIN=$(realpath "${2:?--bin needs a path}"); shift ;;
        *) echo "usage: $0 [--bin BIN | --worktree] [--print]" >&2; exit 2 ;;
    esac
    shift
done
PORT=${INNSERVE_TEST_PORT:-$([ -n "$BIN" ] && echo 0 || echo 8080)}
T0=$(date +%s)
log() { echo "test-make-run: [$(( $(date +%s) - T0 ))s] $*" >&2; }
die() { echo "test-make-run: FAIL: $*" >&2; exit 1; }

tmp=$(mktemp -d)
make_pid=""
daemon=""
cleanup() {
    local rc=$?
    if [ -n "$BIN" ] && [ -n "$daemon" ] && kill -0 "$daemon" 2>/dev/null; then
        kill -TERM "$daemon" 2>/dev/null || true
    fi
    if [ -n "$make_pid" ] && kill -0 "$make_pid" 2>/dev/null; then
        # the daemon is make's child (the recipe execs it): stop it, then make
        for c in $(pgrep -P "$make_pid" || true); do kill -TERM "$c" 2>/dev/null || true; done
        sleep 1
        kill -TERM "$make_pid" 2>/dev/null || true
    fi
    if [ $rc -ne 0 ] && [ -f "$tmp/run.log" ]; then
        echo "--- make run / daemon output (last 30 lines) ---" >&2
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
if [ "$PORT" != 0 ] && curl -s -o /dev/null "http://127.0.0.1:$PORT/healthz" 2>/dev/null; then
    die "something already serves on 127.0.0.1:$PORT; stop it or set INNSERVE_TEST_PORT"
fi

if [ -n "$BIN" ]; then
    # ---- quick: the built daemon on this tree's models/ --------------------------------
    [ -x "$BIN" ] || die "$BIN is not an executable (build it: make)"
    "$BIN" --models "$SRC/models" --host 127.0.0.1 --port "$PORT" 2>"$tmp/run.log" &
    daemon=$!
    for _ in $(seq 1 200); do
        kill -0 "$daemon" 2>/dev/null || die "$BIN exited before it was ready"
        p=$(grep -so '"event":"listening".*"port":[0-9]*' "$tmp/run.log" | grep -o '[0-9]*$' || true)
        if [ -n "$p" ] && curl -fsS -o /dev/null "http://127.0.0.1:$p/readyz" 2>/dev/null; then
            PORT=$p
            break
        fi
        sleep 0.1
    done
    [ "$PORT" != 0 ] || die "$BIN did not become ready in 20 s"
    log "$BIN: ready on 127.0.0.1:$PORT"
fi

if [ -z "$BIN" ]; then
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
fi

# ---- 4. the README's curl calls ---------------------------------------------------------
python3 - "$README" "$PORT" "$PRINT" <<'EOF' || die "the README's curl calls do not give the README's answers"
import json, re, subprocess, sys

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

def tokens(text):
    """JSON text -> nested lists; objects as ("{", [(key, value), ...]), numbers as ("n", text)."""
    return json.loads(text, parse_float=lambda t: ("n", t), parse_int=lambda t: ("n", t),
                      parse_constant=lambda t: ("n", t), object_pairs_hook=lambda kv: ("{", kv))

def show(v):
    return v[1] if isinstance(v, tuple) and v[0] == "n" else json.dumps(v)[:80]

def diff(a, b, path="$"):
    """Where the answer a first differs from the README's b (None when they are the same)."""
    if a == b:
        return None
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        i = next(i for i, (x, y) in enumerate(zip(a, b)) if x != y)
        return diff(a[i], b[i], "%s[%d]" % (path, i))
    if isinstance(a, tuple) and isinstance(b, tuple) and a[0] == b[0] == "{":
        ka, kb = [k for k, _ in a[1]], [k for k, _ in b[1]]
        if ka != kb:
            return "%s: keys %s, README %s" % (path, ka, kb)
        k = next(k for (k, x), (_, y) in zip(a[1], b[1]) if x != y)
        return diff(dict(a[1])[k], dict(b[1])[k], path + "." + k)
    if isinstance(a, list) and isinstance(b, list):
        return "%s: %d entries, README %d" % (path, len(a), len(b))
    return "%s: %s, README %s" % (path, show(a), show(b))

def readme_format(out):
    """The answer as the README shows it: as the daemon prints it."""
    return out.rstrip("\n")

bad = 0
for i, c in enumerate(cmds, 1):
    cmd = c["cmd"].replace(":8080", ":" + port)
    r = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=60)
    if mode_print:
        print("$ " + c["cmd"])
        print(readme_format(r.stdout))
        continue
    first = c["cmd"].splitlines()[0].rstrip(" \\")
    if r.returncode != 0:
        print("  FAIL  %d. %s: exit %d %s" % (i, first, r.returncode, r.stderr.strip()), file=sys.stderr)
        bad += 1
        continue
    try:
        got = tokens(r.stdout)
    except ValueError:
        print("  FAIL  %d. %s: the answer is not JSON: %.200s" % (i, first, r.stdout), file=sys.stderr)
        bad += 1
        continue
    try:
        want = tokens("\n".join(c["out"]))
    except ValueError:
        print("  FAIL  %d. %s: the README's output for it is not one complete JSON answer"
              % (i, first), file=sys.stderr)
        bad += 1
        continue
    d = diff(got, want)
    if d:
        print("  FAIL  %d. %s: %s" % (i, first, d), file=sys.stderr)
        bad += 1
    else:
        print("  ok    %d. %s" % (i, first), file=sys.stderr)
sys.exit(1 if bad else 0)
EOF
[ $PRINT = 1 ] || log "the README's curl calls answer exactly what the README shows"

if [ -n "$BIN" ]; then
    kill -TERM "$daemon"
    rc=0
    wait "$daemon" || rc=$?
    daemon=""
    [ $rc = 0 ] || die "after SIGTERM, $BIN exited with $rc"
    log "PASS"
    exit 0
fi

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
