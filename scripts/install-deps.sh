#!/usr/bin/env bash
# scripts/install-deps.sh — install the Debian packages innserve needs, only those missing.
#
#   scripts/install-deps.sh          build and run (compiler, OpenBLAS, cJSON, libmicrohttpd, curl)
#   scripts/install-deps.sh test     + what `make test` needs (it runs this first; `make check`
#                                      skips what is missing): PyTorch, NumPy, PyYAML for the
#                                      exporter, parity and manifest tests; curl and jq for
#                                      the documents' examples (make test-docs); openssl for the
#                                      TLS tests' certificates (tests/e2e/make-cert.sh); podman,
#                                      runc, debootstrap and podman-compose for the container
#                                      tests; clang (libFuzzer) for make test-fuzz; groff-base to
#                                      render the man pages (make test-install); python3-venv,
#                                      -setuptools and -wheel for make test-python-venv;
#                                      chromium, nodejs and npm for the web page's browser
#                                      test (make test-ui), then `npm ci` in tests/ui
#                                      (playwright-core, pinned by tests/ui/package-lock.json)
#   scripts/install-deps.sh python   + what `make python-venv` needs: venv, setuptools and
#                                      wheel (an offline editable install), NumPy, PyTorch
#   scripts/install-deps.sh deploy   only the container tooling
#   scripts/install-deps.sh bench    + wrk for the server benchmark
#
# Runs apt-get as root, or through sudo when not root.  Debian 12 (bookworm) package names.
set -euo pipefail

profile=${1:-run}
pkgs=(gcc make pkg-config libc6-dev libopenblas-dev libcjson-dev libmicrohttpd-dev
      libcurl4-openssl-dev check)
case "$profile" in
  run) ;;
  test) pkgs+=(python3-torch python3-numpy python3-yaml python3-venv python3-setuptools python3-wheel
              curl jq openssl clang libclang-rt-14-dev groff-base podman runc debootstrap iptables
              podman-compose golang-github-containernetworking-plugin-dnsname
              chromium nodejs npm) ;;
  python) pkgs+=(python3-venv python3-setuptools python3-wheel python3-numpy python3-torch) ;;
  bench) pkgs+=(python3-torch python3-numpy wrk linux-perf) ;;
  deploy) pkgs+=(curl podman runc debootstrap iptables podman-compose
                golang-github-containernetworking-plugin-dnsname) ;;
  *) echo "usage: $0 [run|test|python|bench|deploy]" >&2; exit 2 ;;
esac

missing=()
for p in "${pkgs[@]}"; do
  # node and npm from elsewhere (NodeSource's nodejs bundles npm and conflicts with
  # Debian's npm) count as installed
  case "$p" in
    nodejs) command -v node >/dev/null 2>&1 && continue ;;
    npm) command -v npm >/dev/null 2>&1 && continue ;;
  esac
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}" >&2
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The browser test's npm package, exactly as tests/ui/package-lock.json pins it.
if [ "$profile" = test ]; then
  ui="$(cd "$(dirname "$0")/.." && pwd)/tests/ui"
  if [ ! -f "$ui/node_modules/playwright-core/package.json" ] ||
     ! grep -q "\"version\": \"$(sed -n 's/.*"playwright-core": "\(.*\)".*/\1/p' "$ui/package.json")\"" \
          "$ui/node_modules/playwright-core/package.json"; then
    echo "npm ci in tests/ui (playwright-core)" >&2
    (cd "$ui" && npm ci --no-audit --no-fund --loglevel=error)
  fi
fi
