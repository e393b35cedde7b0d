#!/usr/bin/env bash
# One job per file: fails when any .rs file's non-test code passes a limit
# (600 lines by default; FLEETGATE_MAX_RS_LINES overrides).
#
#     bash scripts/check-file-size.sh
#
# Non-test code: the lines before a file's first `#[cfg(test)]`. Files that
# are test code through and through are not counted: integration tests
# (`tests/`, `*/tests/`), benches, and unit-test modules of their own
# (`tests.rs`). Vendored third-party code (`vendor/`) is not ours to split,
# as the workspace's lints and fmt do not run on it either. A file over the
# limit wants splitting by job, not a raised limit.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
limit=${FLEETGATE_MAX_RS_LINES:-600}
over=0
checked=0
while IFS= read -r file; do
    case "$file" in
        vendor/* | tests/* | */tests/* | benches/* | */benches/* | */tests.rs | tests.rs) continue ;;
    esac
    lines=$(awk '/^[[:space:]]*#\[cfg\(test\)\]/ { exit } { n++ } END { print n + 0 }' "$file")
    checked=$((checked + 1))
    if [ "$lines" -gt "$limit" ]; then
        printf '%6d  %s\n' "$lines" "$file"
        over=$((over + 1))
    fi
done < <(git ls-files -- '*.rs')
if [ "$over" -gt 0 ]; then
    printf 'check-file-size: %d of %d files hold more than %d lines of non-test code; split them by job\n' "$over" "$checked" "$limit" >&2
    exit 1
fi
printf 'check-file-size: %d files, none over %d lines of non-test code\n' "$checked" "$limit"
