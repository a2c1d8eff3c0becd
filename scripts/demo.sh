#!/usr/bin/env bash
# The main job on the bundled example data: ingest real room state (#matrix-spec) and the demo
# policy list, room and manifest into the default store ./prr.redb, then print the intents.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
data=${PRR_EXAMPLE_DATA:-examples/data}
# PRR_BIN: a prr binary to run instead of building one (the CLI tests set it).
if [ -n "${PRR_BIN:-}" ]; then
  prr() { "$PRR_BIN" "$@"; }
else
  prr() { cargo run --manifest-path "$here/Cargo.toml" --release -q -p prr-cli -- "$@"; }
fi
prr ingest "$data/real/derived/chitchat_matrix-spec_state.json" "$data/demo"
echo "-- member_bans: the bans the instance intends"
prr show member_bans --format ndjson
echo "-- server_acl: the ACL it intends"
prr show server_acl --format ndjson
echo "-- acl_sync: are its protected rooms' ACLs in sync"
prr show acl_sync --format ndjson
