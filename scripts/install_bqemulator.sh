#!/usr/bin/env bash
# Installs the BigQuery emulator (bqemulator) into its own virtualenv, for the test suite.
#
# Why a separate venv: bqemulator depends on google-cloud-bigquery-storage; once that package is
# importable, google-cloud-bigquery's to_dataframe() switches to the Storage Read API and calls
# Google's real endpoint. Keeping the emulator out of the project venv keeps clients on REST.
#
# Every package is pinned in scripts/bqemulator-requirements.txt, compiled from
# scripts/bqemulator-requirements.in (which says why duckdb and numpy are there) with:
#   uv pip compile --universal --python-version 3.11 \
#     scripts/bqemulator-requirements.in -o scripts/bqemulator-requirements.txt
#
# Idempotent: does nothing when the venv was built from the current requirements file.
# Needs only uv and PyPI.
#
# Venv location: $BQEMULATOR_VENV, else $TAXI_HOME/bqemulator-venv, else <repo>/.local/bqemulator-venv
# (taxi_assets_tests/emulators/bigquery.py resolves it the same way).
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
REQUIREMENTS="$REPO_ROOT/scripts/bqemulator-requirements.txt"
VENV="${BQEMULATOR_VENV:-${TAXI_HOME:-$REPO_ROOT/.local}/bqemulator-venv}"
MARKER="$VENV/.installed-from"

wanted="$(sha256sum "$REQUIREMENTS" | cut -d' ' -f1)"
if [[ -x "$VENV/bin/python" && -f "$MARKER" && "$(cat "$MARKER")" == "$wanted" ]]; then
  exit 0
fi

command -v uv >/dev/null || { echo "install_bqemulator.sh: uv is required" >&2; exit 1; }

mkdir -p "$(dirname "$VENV")"
# Two test sessions may start at once on a fresh machine: one installs, the other waits.
exec 9>"$VENV.lock"
flock 9
if [[ -x "$VENV/bin/python" && -f "$MARKER" && "$(cat "$MARKER")" == "$wanted" ]]; then
  exit 0
fi
echo "Installing bqemulator into $VENV" >&2
# bqemulator needs Python >= 3.11. Prefer an interpreter already on the machine: uv would
# otherwise try to download one, which CI can't.
uv venv --quiet --allow-existing --python-preference system --python ">=3.11" "$VENV"
uv pip sync --quiet --python "$VENV/bin/python" "$REQUIREMENTS"
printf '%s' "$wanted" > "$MARKER"
