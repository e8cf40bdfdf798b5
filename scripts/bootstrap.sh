#!/usr/bin/env bash
# Installs what LotaBots needs on a fresh Debian machine (Python 3.11+, Java 17, Maven) and makes .venv.
# Usage: scripts/bootstrap.sh [run|test]   — `test` also installs PostgreSQL and Redis for the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
mode="${1:-run}"

need_apt=()
command -v java >/dev/null 2>&1 || need_apt+=(openjdk-17-jre-headless)
command -v mvn >/dev/null 2>&1 || need_apt+=(maven)
if [ "$mode" = test ]; then
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need_apt+=(postgresql)
  command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
  # the web console's browser tests (tests/console/): headless Chromium driven by Selenium
  command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
  command -v chromedriver >/dev/null 2>&1 || need_apt+=(chromium-driver)
fi
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "missing: ${need_apt[*]} — install them (sudo apt-get install ${need_apt[*]}) and re-run" >&2
    exit 1
  fi
  echo "installing ${need_apt[*]} ..."
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

py=python3
if [ ! -x .venv/bin/python ]; then
  "$py" -m venv .venv
fi
extras="model-build"
[ "$mode" = test ] && extras="dev"
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[$extras]"
