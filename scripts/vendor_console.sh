#!/usr/bin/env bash
# Re-fetches the web console's vendored JavaScript from the npm registry at pinned versions and checks
# every file's SHA-256 (docs/console.md, "Vendored libraries"). The files are committed: the console and
# its tests never fetch anything at run time; run this only to re-create or audit them.
#   uPlot     -> gateway/console/static/assets/vendor/   (the usage charts; MIT)
#   axe-core  -> tests/console/vendor/                   (the browser tests' accessibility check; MPL-2.0)
# Usage: scripts/vendor_console.sh [--check]   (--check: fetch to a temp dir and compare, change nothing)
set -euo pipefail
cd "$(dirname "$0")/.."

UPLOT_VERSION=1.6.32
UPLOT_TGZ_SHA256=4b8a8191e425658e3ea8c8c1314b0fc679c861ee3a1af2b20c7b16ba50b5133d
AXE_VERSION=4.14.1
AXE_TGZ_SHA256=e6b0ce02b84d892e2e33e403485e7f3d6c29e2be6df65daf44d89ba564139745

check=0
[ "${1:-}" = --check ] && check=1
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

fetch() {  # name version sha256 -> unpacks into $work/<name>/package
  local name="$1" version="$2" sha="$3"
  mkdir -p "$work/$name"
  curl -fsSL "https://registry.npmjs.org/$name/-/$name-$version.tgz" -o "$work/$name.tgz"
  echo "$sha  $work/$name.tgz" | sha256sum -c --quiet - || { echo "$name-$version.tgz: SHA-256 mismatch" >&2; exit 1; }
  tar xzf "$work/$name.tgz" -C "$work/$name"
}

place() {  # source destination
  if [ "$check" = 1 ]; then
    cmp -s "$1" "$2" || { echo "differs from the registry's: $2" >&2; exit 1; }
  else
    mkdir -p "$(dirname "$2")"
    cp "$1" "$2"
  fi
}

fetch uplot "$UPLOT_VERSION" "$UPLOT_TGZ_SHA256"
ui=gateway/console/static/assets/vendor
place "$work/uplot/package/dist/uPlot.iife.min.js" "$ui/uPlot.iife.min.js"
place "$work/uplot/package/dist/uPlot.min.css" "$ui/uPlot.min.css"
place "$work/uplot/package/LICENSE" "$ui/uPlot.LICENSE.txt"

fetch axe-core "$AXE_VERSION" "$AXE_TGZ_SHA256"
tv=tests/console/vendor
place "$work/axe-core/package/axe.min.js" "$tv/axe.min.js"
place "$work/axe-core/package/LICENSE" "$tv/axe-core.LICENSE.txt"

if [ "$check" = 0 ]; then
  printf 'uPlot %s (npm uplot, tarball sha256 %s): dist/uPlot.iife.min.js, dist/uPlot.min.css, LICENSE\n' \
    "$UPLOT_VERSION" "$UPLOT_TGZ_SHA256" > "$ui/VERSIONS.txt"
  printf 'axe-core %s (npm axe-core, tarball sha256 %s): axe.min.js, LICENSE\n' \
    "$AXE_VERSION" "$AXE_TGZ_SHA256" > "$tv/VERSIONS.txt"
  (cd "$ui" && sha256sum uPlot.iife.min.js uPlot.min.css >> VERSIONS.txt)
  (cd "$tv" && sha256sum axe.min.js >> VERSIONS.txt)
fi
echo "ok: uPlot $UPLOT_VERSION, axe-core $AXE_VERSION"
