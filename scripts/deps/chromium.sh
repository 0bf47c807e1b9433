#!/usr/bin/env bash
# Debian's headless Chromium and its driver, for the operator console's browser tests (tests/console/).
# Idempotent: does nothing when /usr/bin/chromium is there. Never lets Playwright download a browser of its own.
set -u
if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
    exit 0
fi
if [ "$(id -u)" != "0" ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "scripts/deps/chromium.sh: install Debian's 'chromium' and 'chromium-driver' (apt-get install chromium" \
         "chromium-driver); the console's browser tests skip without them" >&2
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
if ! apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null 2>&1; then
    apt-get update -qq >/dev/null 2>&1 || true
    apt-get install -y -qq --no-install-recommends chromium chromium-driver fonts-dejavu-core >/dev/null 2>&1 || \
        echo "scripts/deps/chromium.sh: could not install chromium from Debian; the console's browser tests skip" >&2
fi
exit 0
