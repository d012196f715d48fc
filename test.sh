#!/usr/bin/env bash
# Every test: the Rust workspace (unit, doc, HTTP, crash and fault tests against the real
# binary; the store conformance suite on SQLite and PostgreSQL), the HTTP suite again with
# its in-process servers on PostgreSQL (one schema per server) and their asset bytes in
# moto's S3-compatible server (one prefix per server), then the TypeScript SDK (unit tests,
# bundle sizes, and end-to-end tests in Chromium against the real binary). Arguments go to
# `cargo test`.
#
# The browser tests need Node >= 20 and Chromium (/usr/bin/chromium, Debian's `chromium`).
# Without Chromium they print SKIPPED and pass, unless LIFEBOAT_BROWSER_TESTS=require (CI).
# The PostgreSQL tests need a server: LIFEBOAT_TEST_DATABASE_URL, by default
# postgres://postgres@127.0.0.1:5432/postgres (trust auth). The bucket tests start
# moto_server (PyPI: `pip install 'moto[server]'`) on free ports themselves.
set -euo pipefail
cd "$(dirname "$0")"

cargo test --workspace --all-features "$@"
LIFEBOAT_TEST_STORE=postgres LIFEBOAT_TEST_BLOBS=s3 cargo test -p lifeboat-cli --all-features --test it "$@"

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
