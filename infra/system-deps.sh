#!/usr/bin/env bash
# System tools the tests use as independent checkers or backends: OpenSSL (verify, crl, ocsp),
# SoftHSM2 (the PKCS#11 signer), jq (the shell examples), a JRE's keytool (JKS stores),
# and wrk (HTTP benchmarks). Installed with apt when missing and we may; otherwise a warning.
set -u
need=()
command -v openssl >/dev/null 2>&1 || need+=(openssl)
[ -e /usr/lib/softhsm/libsofthsm2.so ] || need+=(softhsm2)
command -v jq >/dev/null 2>&1 || need+=(jq)
command -v keytool >/dev/null 2>&1 || need+=(default-jre-headless)
command -v wrk >/dev/null 2>&1 || need+=(wrk)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing system packages: ${need[*]}"
  apt-get update -qq >/dev/null 2>&1 || true
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null \
    || echo "warning: could not install ${need[*]}; some tests will fail" >&2
else
  echo "warning: please install ${need[*]} (needed by some tests)" >&2
fi
exit 0
