#!/usr/bin/env bash
# The whole test suite, from nothing: installs, builds the model once (cached), runs every test against
# real Kafka, PostgreSQL, Redis, chDB and the real model, all started as local processes by the fixtures.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh test
.venv/bin/lotabots model build
exec .venv/bin/python -m pytest -p no:cacheprovider "$@"
