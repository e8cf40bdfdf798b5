#!/usr/bin/env bash
# The whole platform on this machine, from nothing: installs, fetches Kafka, builds the model, runs it.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh run
exec .venv/bin/lotabots up "$@"
