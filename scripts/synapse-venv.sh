#!/usr/bin/env bash
# Creates the Python virtual environment with the pinned Synapse that the homeserver-backed tests
# start (crate `prr-synapse-harness`, folder testing/synapse). Idempotent: a venv that already
# holds the pinned version and imports is reused at once; anything else there is replaced.
#
#   bash scripts/synapse-venv.sh            # creates or checks target/synapse-venv
#   PRR_SYNAPSE_VENV=DIR bash scripts/...   # another place (the tests read the same variable)
#   PYTHON=python3.12 bash scripts/...      # another interpreter (Synapse needs >= 3.10)
#
# Prints one line on success; pip's output is shown only when the install fails.
set -euo pipefail
cd "$(dirname "$0")/.."

# The pinned Synapse. Keep in step with `SYNAPSE_VERSION` in testing/synapse/src/venv.rs.
SYNAPSE_VERSION=1.163.2

venv=${PRR_SYNAPSE_VENV:-target/synapse-venv}
python=${PYTHON:-python3}
marker="$venv/.prr-synapse-version"

# A venv is usable when its marker names the pinned version and Synapse imports at that version.
usable() {
  [ -x "$venv/bin/python" ] && [ -f "$marker" ] &&
    [ "$(cat "$marker")" = "$SYNAPSE_VERSION" ] &&
    [ "$("$venv/bin/python" -c 'import importlib.metadata as m, synapse; print(m.version("matrix-synapse"))' 2> /dev/null)" = "$SYNAPSE_VERSION" ]
}

if usable; then
  echo "synapse-venv: $venv has Synapse $SYNAPSE_VERSION (reused)"
  exit 0
fi

if ! "$python" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' 2> /dev/null; then
  echo "synapse-venv: $python is missing or older than 3.10; Synapse $SYNAPSE_VERSION needs 3.10+" >&2
  echo "synapse-venv: set PYTHON to a newer interpreter" >&2
  exit 1
fi

start=$(date +%s)
rm -rf "$venv"
mkdir -p "$(dirname "$venv")"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
if ! "$python" -m venv "$venv" > "$log" 2>&1 ||
  ! "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
    "matrix-synapse==$SYNAPSE_VERSION" >> "$log" 2>&1; then
  cat "$log" >&2
  echo "synapse-venv: installing matrix-synapse==$SYNAPSE_VERSION into $venv failed (pip's output above)" >&2
  rm -rf "$venv"
  exit 1
fi
# The marker is written last: an interrupted install is never taken for a working one.
echo "$SYNAPSE_VERSION" > "$marker"
if ! usable; then
  echo "synapse-venv: $venv was installed but does not import matrix-synapse $SYNAPSE_VERSION" >&2
  exit 1
fi
echo "synapse-venv: installed Synapse $SYNAPSE_VERSION into $venv in $(($(date +%s) - start)) s"
