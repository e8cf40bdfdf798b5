"""Console first load over loopback: bytes transferred (compressed, as on the wire) and time to interactive,
cold and warm cache, in headless Chromium (Debian's `chromium` + `chromium-driver`, through Selenium).

The gateway app (`gateway.app.create_app`, the real routers and middleware) runs under uvicorn on loopback
with its lifespan off: the console's static routes need no database, broker or model, and a signed-out
first visit (`/` -> `/signin`) calls no API route. Bytes are the Resource/Navigation Timing API's
`transferSize` (headers + compressed body) summed over the document and every sub-resource; time to
interactive is from navigation start to the sign-in form being rendered with its email field focused
(recorded in the page by an observer injected over CDP, before any page script runs). Cold: a fresh
browser profile per run. Warm: the next navigation in the same browser (assets are immutable and cached;
index.html is `no-cache` and fetched again).

    .venv/bin/python bench/bench_console.py --runs 7
"""

from __future__ import annotations

import argparse
import gzip
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from _common import REPO, wait_http

OBSERVER = """
(() => {
  const mark = () => {
    const email = document.querySelector('main input[name=email]');
    if (email && document.activeElement === email && window.__tti === undefined) window.__tti = performance.now();
  };
  document.addEventListener('focusin', mark, true);
  new MutationObserver(mark).observe(document, {subtree: true, childList: true});
})();
"""
MEASURE = """
const nav = performance.getEntriesByType('navigation')[0];
const res = performance.getEntriesByType('resource');
const all = [nav, ...res];
return {
  tti: window.__tti === undefined ? null : window.__tti,
  dcl: nav.domContentLoadedEventEnd, load: nav.loadEventEnd,
  transfer: all.reduce((a, e) => a + e.transferSize, 0),
  encoded: all.reduce((a, e) => a + e.encodedBodySize, 0),
  decoded: all.reduce((a, e) => a + e.decodedBodySize, 0),
  requests: all.length,
  fromCache: res.filter((e) => e.transferSize === 0).length,
  names: all.map((e) => [e.name.split('/').pop() || '/', e.transferSize]),
};
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve(port: int, data_dir: str) -> None:
    """Subprocess entry: the gateway app under uvicorn, lifespan off (the console needs no services)."""
    import uvicorn

    from gateway.app import create_app
    from lotabots.settings import Settings

    app = create_app(Settings(data_dir=Path(data_dir), database_url=f"sqlite+aiosqlite:///{data_dir}/x.db"))
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False, lifespan="off")


def _browser(profile: Path) -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1280,900",
                "--no-first-run", "--disable-extensions", f"--user-data-dir={profile}"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver") or "/usr/bin/chromedriver"), options=options)
    driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": OBSERVER})
    return driver


def _load(driver: Any, url: str) -> dict[str, Any]:
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(url)
    WebDriverWait(driver, 30).until(lambda d: d.execute_script("return window.__tti !== undefined"))
    WebDriverWait(driver, 30).until(lambda d: d.execute_script(
        "return performance.getEntriesByType('navigation')[0].loadEventEnd > 0"))
    return dict(driver.execute_script(MEASURE))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()

    from gateway.routers.console import bundle

    b = bundle()
    everything = sum(len(v) for k, v in b.gzipped.items())
    raw = sum(len(d) for d, _ in b.files.values()) + len(b.index)
    print(f"console bundle {b.version}: {len(b.files)} assets, {raw / 1024:.1f} KiB raw, "
          f"{everything / 1024:.1f} KiB gzipped (every text asset, uPlot included)")
    for name in ("app.js", "console.css", "vendor/uPlot.iife.min.js"):
        data = b.files[name][0]
        print(f"  {name}: {len(data) / 1024:.1f} KiB raw, {len(gzip.compress(data, 9)) / 1024:.1f} KiB gzip")

    port = _free_port()
    data = tempfile.mkdtemp(prefix="bench-console-")
    server = subprocess.Popen([sys.executable, __file__, "--serve", str(port), data], cwd=REPO)
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_http(url)
        cold, warm = [], []
        for i in range(args.runs):
            profile = Path(tempfile.mkdtemp(prefix="bench-console-profile-"))
            driver = _browser(profile)
            try:
                cold.append(_load(driver, url))
                driver.get("about:blank")
                warm.append(_load(driver, url))
            finally:
                driver.quit()
                shutil.rmtree(profile, ignore_errors=True)
            print(f"run {i + 1}: cold {cold[-1]['transfer'] / 1024:.1f} KiB, TTI {cold[-1]['tti']:.0f} ms; "
                  f"warm {warm[-1]['transfer'] / 1024:.1f} KiB, TTI {warm[-1]['tti']:.0f} ms", flush=True)
    finally:
        server.terminate()
        server.wait(10)
        shutil.rmtree(data, ignore_errors=True)

    def med(rows: list[dict[str, Any]], key: str) -> float:
        return statistics.median(r[key] for r in rows)

    print(f"\nfirst load of {url} -> /signin, {args.runs} runs, medians (p = max):")
    for label, rows in (("cold", cold), ("warm", warm)):
        print(f"  {label}: {med(rows, 'transfer') / 1024:.1f} KiB transferred ({med(rows, 'encoded') / 1024:.1f} KiB "
              f"bodies, {med(rows, 'decoded') / 1024:.1f} KiB decoded), {int(med(rows, 'requests'))} requests "
              f"({int(med(rows, 'fromCache'))} from cache); time to interactive {med(rows, 'tti'):.0f} ms "
              f"(max {max(r['tti'] for r in rows):.0f}), DOMContentLoaded {med(rows, 'dcl'):.0f} ms, "
              f"load {med(rows, 'load'):.0f} ms")
    print("  cold requests:", ", ".join(f"{n} {s}" for n, s in cold[-1]["names"]))
    goal_bytes = med(cold, "transfer") <= 300 * 1024
    goal_time = med(cold, "tti") <= 1000
    print(f"goal <= 300 KB compressed: {'met' if goal_bytes else 'MISSED'}; <= 1 s cold: {'met' if goal_time else 'MISSED'}")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--serve":
        serve(int(sys.argv[2]), sys.argv[3])
    else:
        main()
