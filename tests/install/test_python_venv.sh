#!/bin/bash
# tests/install/test_python_venv.sh — `make python-venv` works offline on Debian 12: the
# venv (made by the same recipe, python-venv-only, into a temporary directory) imports
# innserve and innserve.export from outside the source tree, sees Debian's numpy and torch
# when they are installed, and runs the README's client call shape; a plain (non-editable)
# `pip install --no-index --no-build-isolation ./clients/python` builds and installs too,
# every module of the innserve.export package with it.
# Nothing is downloaded (pip --no-index) and nothing is left in the source tree.
# Usage: test_python_venv.sh MAKE   (make test-python-venv runs it)
set -euo pipefail
MAKE=${1:-make}
cd "$(dirname "$0")/../.."
src=$PWD
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL test-python-venv: $*" >&2; exit 1; }
ok() { echo "ok   $*"; }
before=$(git status --porcelain --ignored clients/python 2>/dev/null || true)

# ---- the make target's recipe ------------------------------------------------------------
$MAKE --no-print-directory -s python-venv-only VENV="$tmp/venv" >"$tmp/make.log" 2>&1 \
    || { cat "$tmp/make.log"; fail "make python-venv-only"; }
py=$tmp/venv/bin/python
[ -x "$py" ] || fail "no $py"
cd "$tmp"   # not the source tree: the package must come from the venv
out=$("$py" - <<'PY'
import sys
import innserve
import innserve.export
from innserve import Client
assert sys.prefix != sys.base_prefix, "not running in the venv"
print("prefix", sys.prefix)
print("innserve", innserve.__version__, innserve.__file__)
print("export", innserve.export.export.__module__)
try:
    import numpy, torch
    print("system packages", "numpy", numpy.__version__, "torch", torch.__version__)
except ImportError as e:
    print("system packages missing:", e)
c = Client("http://127.0.0.1:9")
print("client", c.url, c.retries)
PY
) || fail "importing innserve from the venv: $out"
echo "$out" | sed 's/^/     /'
grep -qx "prefix $tmp/venv" <<<"$out" || fail "the venv's interpreter did not run"
grep -q "^innserve [0-9.]* $src/clients/python/innserve/__init__.py$" <<<"$out" \
    || fail "innserve is not the source tree's package (editable install)"
grep -qx "export innserve.export.inn" <<<"$out" || fail "innserve.export"
grep -qx "client http://127.0.0.1:9 3" <<<"$out" || fail "innserve.Client"
ok "make python-venv-only: the venv imports innserve and innserve.export (editable, offline)"
"$tmp/venv/bin/pip" show innserve >/dev/null || fail "pip does not list innserve in the venv"

# ---- a plain install, as `pip install ./clients/python` on a machine with PyPI -------------
# (from a copy: building writes build/ and innserve.egg-info/ beside the sources, which
# .gitignore names; the test leaves the tree as it found it)
cp -r "$src/clients/python" "$tmp/pkg"
rm -rf "$tmp/pkg/build" "$tmp/pkg/"*.egg-info
/usr/bin/python3 -m venv --system-site-packages "$tmp/plain"
"$tmp/plain/bin/python" -m pip install --quiet --no-index --no-build-isolation "$tmp/pkg" \
    >"$tmp/pip.log" 2>&1 || { cat "$tmp/pip.log"; fail "plain pip install"; }
loc=$("$tmp/plain/bin/python" -c 'import innserve, innserve.export; print(innserve.__file__)') \
    || fail "import from the plain install"
case "$loc" in "$tmp/plain/"*) ;; *) fail "plain install imports innserve from $loc";; esac
# every module of the exporter package is installed (pyproject's package list names it)
want=$(cd "$src/clients/python/innserve/export" && ls *.py | sort | tr '\n' ' ')
have=$(cd "$(dirname "$loc")/export" 2>/dev/null && ls *.py | sort | tr '\n' ' ') || true
[ "$want" = "$have" ] || fail "the plain install's innserve/export/ has [$have], the source [$want]"
ok "pip install ./clients/python (no index, no build isolation) installs a copy: $loc"

cd "$src"
after=$(git status --porcelain --ignored clients/python 2>/dev/null || true)
[ "$before" = "$after" ] || fail "the install left files in clients/python: $(diff <(echo "$before") <(echo "$after") || true)"
ok "nothing left in clients/python"
echo "test-python-venv: passed"
