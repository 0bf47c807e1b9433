#!/usr/bin/env bash
# The SAP adapter's real OData peer: SAP's CAP runtime (@sap/cds, @cap-js/sqlite) with the OData V2 adapter,
# installed from the npm registry into tests/sap_cap (package-lock.json pins the versions). --ignore-scripts:
# the database runs on sql.js (WebAssembly, see .cdsrc.json), so better-sqlite3 need not be compiled. Idempotent: does
# nothing when node_modules matches the lock file. Without Node.js >= 20 it says so and exits 0; the tests
# that need the peer then skip (and fail under IRONBUS_REQUIRE_SERVICES=1).
set -u
cd "$(dirname "$0")/../../tests/sap_cap" || exit 0

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "cds.sh: installing Node.js and npm from Debian's packages"
    (apt-get install -y -q nodejs npm >/dev/null 2>&1 || (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q nodejs npm >/dev/null 2>&1)) \
      || { echo "cds.sh: could not install nodejs/npm; install Node.js >= 20 by hand"; exit 0; }
  else
    echo "cds.sh: Node.js >= 20 and npm are needed for the SAP OData peer (tests/sap_cap); install them by hand"
    exit 0
  fi
fi
major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
if [ "$major" -lt 20 ]; then
  echo "cds.sh: Node.js $(node --version) is too old for @sap/cds 9 (needs >= 20); the SAP peer tests will skip"
  exit 0
fi
if [ -f node_modules/.package-lock.json ] && [ node_modules/.package-lock.json -nt package-lock.json ] \
   && [ -d node_modules/@sap/cds ]; then
  exit 0
fi
echo "cds.sh: npm ci in tests/sap_cap"
npm ci --no-audit --no-fund --ignore-scripts --loglevel=error >/dev/null 2>&1 \
  || { echo "cds.sh: npm ci failed (no registry?); the SAP peer tests will skip"; exit 0; }
