#!/bin/bash
# tests/install/test_install.sh — `make install` and `make uninstall`, for real, into a
# temporary DESTDIR (no root needed, nothing outside it is touched):
#   1. default paths (PREFIX=/usr/local): the binaries (mode 755), the man pages (644), the
#      systemd unit (644, ExecStart naming the installed binary);
#   2. the installed innserve and innctl run: --help, --version (the same release), and
#      innserve serves models/ until /readyz answers 200, queried by the installed innctl;
#   3. the man pages agree with --help (tests/install/check_man.py) and render cleanly;
#   4. uninstall leaves no file behind;
#   5. again with PREFIX, BINDIR, MANDIR and UNITDIR given.
# Usage: test_install.sh MAKE BUILDDIR   (make test-install runs it)
set -euo pipefail
MAKE=${1:-make}
BUILD=${2:-build}
cd "$(dirname "$0")/../.."
tmp=$(mktemp -d)
pid=
cleanup() {
    if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
    rm -rf "$tmp"
}
trap cleanup EXIT
fail() { echo "FAIL test-install: $*" >&2; exit 1; }
ok() { echo "ok   $*"; }

mode() { stat -c %a "$1"; }

# $1 DESTDIR, $2 BINDIR, $3 MANDIR, $4 UNITDIR (absolute, as installed)
check_tree() {
    local root=$1 bindir=$2 mandir=$3 unitdir=$4
    for f in "$bindir/innserve" "$bindir/innctl"; do
        [ -f "$root$f" ] || fail "$f not installed"
        [ "$(mode "$root$f")" = 755 ] || fail "$f has mode $(mode "$root$f"), want 755"
    done
    for f in "$mandir/man1/innserve.1" "$mandir/man1/innctl.1" "$unitdir/innserve.service"; do
        [ -f "$root$f" ] || fail "$f not installed"
        [ "$(mode "$root$f")" = 644 ] || fail "$f has mode $(mode "$root$f"), want 644"
    done
    cmp -s "$root$mandir/man1/innserve.1" docs/man/innserve.1 || fail "innserve.1 differs"
    cmp -s "$root$mandir/man1/innctl.1" docs/man/innctl.1 || fail "innctl.1 differs"
    cmp -s "$root$bindir/innserve" "$BUILD/innserve" || fail "innserve differs from $BUILD's"
    grep -qx "ExecStart=$bindir/innserve --models .*" "$root$unitdir/innserve.service" \
        || fail "the unit's ExecStart does not run $bindir/innserve: $(grep ExecStart "$root$unitdir/innserve.service")"
    local other
    other=$(grep -o '[^ =]*bin/innserve' "$root$unitdir/innserve.service" | grep -vx "$bindir/innserve" || true)
    [ -z "$other" ] || fail "the unit names innserve elsewhere than $bindir: $other"
    local n
    n=$(find "$root" -type f | wc -l)
    [ "$n" = 5 ] || fail "install wrote $n files, want 5: $(find "$root" -type f)"
    ok "installed under $root: $bindir/{innserve,innctl}, $mandir/man1/{innserve,innctl}.1, $unitdir/innserve.service"
}

check_empty() {
    local left
    left=$(find "$1" -type f)
    [ -z "$left" ] || fail "uninstall left: $left"
    ok "uninstall removed every installed file"
}

# ---- 1. default paths --------------------------------------------------------------------
root=$tmp/root
$MAKE --no-print-directory -s install DESTDIR="$root" BUILD="$BUILD" >/dev/null
check_tree "$root" /usr/local/bin /usr/local/share/man /usr/local/lib/systemd/system
bin=$root/usr/local/bin

# ---- 2. the installed binaries run -------------------------------------------------------
h=$("$bin/innserve" --help) || fail "installed innserve --help exits $?"
grep -q -- '--allow-empty' <<<"$h" || fail "installed innserve --help: $h"
h=$("$bin/innctl" --help) || fail "installed innctl --help exits $?"
grep -q -- '--retries' <<<"$h" || fail "installed innctl --help: $h"
sv=$("$bin/innserve" --version); cv=$("$bin/innctl" --version)
[[ "$sv" =~ ^innserve\ [0-9]+\.[0-9]+\.[0-9]+$ ]] || fail "innserve --version: '$sv'"
[ "${cv#innctl }" = "${sv#innserve }" ] || fail "innctl --version '$cv' vs innserve --version '$sv'"
ok "installed binaries: --help, --version ($sv, $cv)"
"$bin/innserve" --models models --host 127.0.0.1 --port 0 --access-log off 2>"$tmp/log" &
pid=$!
port=
for _ in $(seq 200); do
    port=$(sed -n 's/.*"event":"listening".*"port":\([0-9]*\).*/\1/p' "$tmp/log" | head -1)
    [ -n "$port" ] && break
    sleep 0.05
done
[ -n "$port" ] || fail "the installed innserve did not start: $(cat "$tmp/log")"
ready=0
for _ in $(seq 200); do
    if "$bin/innctl" --url "http://127.0.0.1:$port" health --quiet 2>/dev/null; then ready=1; break; fi
    sleep 0.05
done
[ $ready = 1 ] || fail "the installed innserve did not become ready: $(cat "$tmp/log")"
h=$("$bin/innctl" --url "http://127.0.0.1:$port" models) || fail "innctl models exits $?"
grep -q ik_cinn <<<"$h" || fail "innctl models: $h"
kill -TERM "$pid"; wait "$pid" || fail "innserve did not exit 0 on SIGTERM"
pid=
ok "installed innserve serves models/, installed innctl reaches it"

# ---- 3. the man pages --------------------------------------------------------------------
/usr/bin/python3 tests/install/check_man.py "$bin/innserve" "$bin/innctl" \
    "$root/usr/local/share/man/man1" >"$tmp/man.log" || { cat "$tmp/man.log"; fail "man pages"; }
ok "man pages agree with --help ($(grep -c '^ok' "$tmp/man.log") checks)"

# ---- 4. uninstall ------------------------------------------------------------------------
$MAKE --no-print-directory -s uninstall DESTDIR="$root" >/dev/null
check_empty "$root"

# ---- 5. custom paths ---------------------------------------------------------------------
root2=$tmp/root2
$MAKE --no-print-directory -s install DESTDIR="$root2" BUILD="$BUILD" PREFIX=/opt/innserve \
    MANDIR=/opt/innserve/man UNITDIR=/etc/systemd/system >/dev/null
check_tree "$root2" /opt/innserve/bin /opt/innserve/man /etc/systemd/system
"$root2/opt/innserve/bin/innserve" --version >/dev/null || fail "custom-path innserve"
$MAKE --no-print-directory -s uninstall DESTDIR="$root2" PREFIX=/opt/innserve \
    MANDIR=/opt/innserve/man UNITDIR=/etc/systemd/system >/dev/null
check_empty "$root2"
root3=$tmp/root3
$MAKE --no-print-directory -s install DESTDIR="$root3" BUILD="$BUILD" BINDIR=/usr/sbin >/dev/null
check_tree "$root3" /usr/sbin /usr/local/share/man /usr/local/lib/systemd/system
$MAKE --no-print-directory -s uninstall DESTDIR="$root3" BINDIR=/usr/sbin >/dev/null
check_empty "$root3"
echo "test-install: passed"
