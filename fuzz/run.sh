#!/usr/bin/env bash
# Runs every fuzz target for a fixed time (default 60 s each) and prints the executions.
# Needs cargo-fuzz (`cargo install cargo-fuzz`) and a nightly toolchain; on a stable
# toolchain, RUSTC_BOOTSTRAP=1 lets cargo-fuzz use the sanitizer flags. Never run by CI.
set -euo pipefail
cd "$(dirname "$0")"
seconds="${1:-60}"
for target in asset_name project_change http_request import_archive; do
    mkdir -p "corpus/$target"
    echo "== $target (${seconds} s)"
    RUSTC_BOOTSTRAP="${RUSTC_BOOTSTRAP:-1}" cargo fuzz run "$target" "corpus/$target" -- \
        -max_total_time="$seconds" -rss_limit_mb=4096 2>&1 | grep -E "^#[0-9]+ +DONE|Done [0-9]+ runs|ERROR|panicked" || true
done
