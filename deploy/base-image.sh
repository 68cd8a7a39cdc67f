#!/usr/bin/env bash
# deploy/base-image.sh — make sure podman can resolve the Dockerfile's base image,
# debian:bookworm-slim, without a registry.
#
#   deploy/base-image.sh            create localhost/debian:bookworm-slim unless it exists
#   deploy/base-image.sh --force    rebuild it
#
# When a registry is reachable nothing here is needed (podman pulls debian:bookworm-slim).
# Where none is (CI, this project's machines), the image is made the way the official one
# is: `debootstrap --variant=minbase bookworm` from the Debian mirror apt already uses on
# this machine, trimmed like the official slim image (no docs, man pages, locales, apt
# lists or cached .debs), then `podman import`ed.  It is tagged both
# localhost/debian:bookworm-slim and docker.io/library/debian:bookworm-slim, so the
# Dockerfile's unmodified `FROM debian:bookworm-slim` resolves to it with --pull=never.
#
# Needs root, podman and debootstrap (deploy/test-image.sh installs them when missing).
set -euo pipefail

TAG=localhost/debian:bookworm-slim
ALIAS=docker.io/library/debian:bookworm-slim
SUITE=bookworm

die() { echo "base-image.sh: $*" >&2; exit 1; }

if [ "${1:-}" != "--force" ] && podman image exists "$TAG"; then
    podman image exists "$ALIAS" || podman tag "$TAG" "$ALIAS"
    echo "base-image.sh: $TAG exists (cached; --force rebuilds it)"
    exit 0
fi
[ "$(id -u)" -eq 0 ] || die "must run as root (debootstrap)"
command -v debootstrap >/dev/null || die "debootstrap is not installed"

# The mirror apt uses here: deb822 sources first, then the one-line format.
mirror=""
for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    mirror=$(awk '/^URIs:/ {print $2; exit}' "$f")
    case "$mirror" in *security*) mirror="";; esac
    [ -n "$mirror" ] && break
done
if [ -z "$mirror" ]; then
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -f "$f" ] || continue
        mirror=$(awk '$1 == "deb" && $0 !~ /security/ {for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) {print $i; exit}}' "$f")
        [ -n "$mirror" ] && break
    done
fi
mirror=${mirror:-http://deb.debian.org/debian}
security=${mirror%/debian}/debian-security
case "$mirror" in */debian) ;; *) security=http://deb.debian.org/debian-security;; esac
echo "base-image.sh: debootstrap --variant=minbase $SUITE from $mirror"

root=$(mktemp -d /var/tmp/innserve-rootfs.XXXXXX)
trap 'rm -rf "$root"' EXIT
debootstrap --variant=minbase "$SUITE" "$root" "$mirror" >"$root.log" 2>&1 || {
    tail -20 "$root.log" >&2; rm -f "$root.log"; die "debootstrap failed"; }
rm -f "$root.log"

# Trim like the official slim image and keep it trimmed for what later layers install.
cat >"$root/etc/dpkg/dpkg.cfg.d/slim" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
EOF
cat >"$root/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache ""; Dir::Cache::srcpkgcache "";
EOF
echo 'Acquire::Languages "none";' >"$root/etc/apt/apt.conf.d/docker-no-languages"
rm -f "$root/etc/apt/sources.list"
cat >"$root/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $mirror
Suites: $SUITE $SUITE-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $security
Suites: $SUITE-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
find "$root/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete 2>/dev/null || true
find "$root/usr/share/doc" -mindepth 1 -type d -empty -delete 2>/dev/null || true
rm -rf "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/usr/share/locale/* \
       "$root"/usr/share/groff/* "$root"/usr/share/lintian/* \
       "$root"/var/cache/apt/archives/*.deb "$root"/var/cache/apt/*.bin \
       "$root"/var/lib/apt/lists/* "$root"/var/log/*.log "$root"/var/log/apt/* \
       "$root"/var/cache/debconf/*-old "$root"/tmp/* 2>/dev/null || true
: >"$root/etc/machine-id"

tar --numeric-owner -C "$root" -c . | podman import \
    --change 'CMD ["bash"]' --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    - "$TAG" >/dev/null
podman tag "$TAG" "$ALIAS"
echo "base-image.sh: imported $TAG ($(podman image inspect --format '{{.Size}}' "$TAG") bytes), tagged $ALIAS"
