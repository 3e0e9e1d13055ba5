#!/usr/bin/env bash
# The test hooks (cargo feature `test-hooks`) must reach a binary only when a command names the
# feature. If anything enables it by itself (a dev-dependency on the crate with the feature, a
# default feature), `cargo bench` and `cargo test --release` build target/release/
# isolation-collector with a crash point and a clock offset that an environment variable arms.
# This asks cargo how it resolves features for every target kind (normal, build and dev
# dependencies, all platforms) with no feature named: `test-hooks` must not be among them.
# Cheap: it resolves, it compiles nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

resolved=$(cargo tree --locked --workspace --edges features,normal,build,dev --target all --prefix none)
if grep -q '^isolation-collector feature "test-hooks"' <<<"$resolved"; then
  echo "check_hooks: the feature test-hooks is enabled without being asked for:" >&2
  cargo tree --locked --workspace --edges features,normal,build,dev --target all \
    --invert isolation-collector 2>/dev/null | grep -B2 -A2 test-hooks >&2 || true
  echo "Only the test command may name it (--features isolation-collector/test-hooks); see Cargo.toml [features]." >&2
  exit 1
fi
echo "check_hooks: test-hooks is off unless named"
