#!/bin/sh
# tests/e2e/make-cert.sh DIR — a throw-away self-signed certificate for the TLS tests:
# DIR/cert.pem (CN localhost, subjectAltName DNS:localhost and IP 127.0.0.1, valid 2 days)
# and DIR/key.pem (P-256, unencrypted, mode 600).  Uses openssl, or certtool (gnutls-bin)
# when openssl is missing.  Exit 1 with a message when neither is installed.
set -eu
dir=$1
umask 077
if command -v openssl >/dev/null 2>&1; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$dir/key.pem" -out "$dir/cert.pem" -days 2 -subj /CN=localhost \
    -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" 2>/dev/null
elif command -v certtool >/dev/null 2>&1; then
  certtool --generate-privkey --key-type ecdsa --curve secp256r1 --outfile "$dir/key.pem" \
    2>/dev/null
  cat > "$dir/cert.tmpl" <<'TMPL'
cn = "localhost"
dns_name = "localhost"
ip_address = "127.0.0.1"
expiration_days = 2
ca
cert_signing_key
signing_key
tls_www_server
TMPL
  certtool --generate-self-signed --load-privkey "$dir/key.pem" --template "$dir/cert.tmpl" \
    --outfile "$dir/cert.pem" 2>/dev/null
  rm -f "$dir/cert.tmpl"
else
  echo "make-cert.sh: neither openssl nor certtool (gnutls-bin) is installed" >&2
  exit 1
fi
chmod 644 "$dir/cert.pem"
