#!/usr/bin/env bash
# Every test: the Rust workspace (unit, doc, HTTP, crash and fault tests against the real
# binary), then the TypeScript SDK (unit tests, bundle sizes, and end-to-end tests in
# Chromium against the real binary). Arguments go to `cargo test`.
#
# The browser tests need Node >= 20 and Chromium (/usr/bin/chromium, Debian's `chromium`).
# Without Chromium they print SKIPPED and pass, unless LIFEBOAT_BROWSER_TESTS=require (CI).
set -euo pipefail
cd "$(dirname "$0")"

cargo test --workspace --all-features "$@"

cd sdk/typescript
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
    npm ci --no-audit --no-fund
fi
npm test
npm run size
cargo build -q -p lifeboat-cli
if [ -x /usr/bin/chromium ]; then
    LIFEBOAT_BIN="$(cd ../.. && pwd)/target/debug/lifeboat" npm run test:browser
elif [ "${LIFEBOAT_BROWSER_TESTS:-}" = require ]; then
    echo "browser tests required but /usr/bin/chromium is missing" >&2
    exit 1
else
    echo "SKIPPED: browser tests (install Debian's chromium to run them)"
fi
