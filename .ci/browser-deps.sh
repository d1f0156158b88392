#!/usr/bin/env bash
# Install what the Chromium dashboard test (tests/dashboard.rs) needs, only if missing:
# Debian's chromium at /usr/bin/chromium, and playwright-core in tests/browser/node_modules.
# Idempotent: a second run with everything present does nothing and exits 0.
set -euo pipefail
cd "$(dirname "$0")/.."

export DEBIAN_FRONTEND=noninteractive
if [ ! -x /usr/bin/chromium ]; then
  echo "browser-deps: installing Debian's chromium"
  apt-get update -qq
  apt-get install -y -qq chromium
fi

if [ ! -d tests/browser/node_modules/playwright-core ]; then
  echo "browser-deps: installing playwright-core in tests/browser"
  # playwright-core never downloads a browser; the test drives /usr/bin/chromium.
  if [ -f tests/browser/package-lock.json ]; then
    (cd tests/browser && npm ci --no-audit --no-fund)
  else
    (cd tests/browser && npm install --no-audit --no-fund)
  fi
fi

echo "browser-deps: $(dpkg-query -W -f '${Package} ${Version}' chromium 2>/dev/null || echo "chromium (not from dpkg)")"
echo "browser-deps: playwright-core $(node -p "require('./tests/browser/node_modules/playwright-core/package.json').version")"
