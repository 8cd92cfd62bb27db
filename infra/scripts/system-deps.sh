#!/usr/bin/env bash
# Install the Debian packages the test suite needs, once (idempotent, fast when present):
# PostgreSQL 15 (MLflow server-mode test), Chromium + chromedriver (real-browser app test),
# dicom3tools (dciodvfy) and dcmtk (dcmdump, dcm2pnm) for the exported-DICOM conformance test.
set -euo pipefail
need=()
[ -x /usr/lib/postgresql/15/bin/initdb ] || need+=(postgresql)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
command -v dciodvfy >/dev/null 2>&1 || need+=(dicom3tools)
{ command -v dcmdump && command -v dcm2pnm; } >/dev/null 2>&1 || need+=(dcmtk)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "system-deps: missing ${need[*]}; run as root or install them (apt-get install -y ${need[*]})" >&2
  exit 0
fi
echo "system-deps: installing ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
