#!/usr/bin/env bash
# The test suite: every crate's unit, integration and doc tests, some against a real Synapse.
set -euo pipefail
cd "$(dirname "$0")/.."
# The homeserver-backed tests (testing/synapse) start a real Synapse from this venv: created
# once (about 25 s, from PyPI), reused at once afterwards.
bash scripts/synapse-venv.sh
cargo test --workspace --locked
