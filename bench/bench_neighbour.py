"""What a neighbour process costs the engine's decode on a small machine.

On one 2-core box the whole stack runs beside the inference worker: the Kafka broker, the gateway,
the result writer. bench_streaming.py prints the cores each used while one stream decoded. This
bench isolates the effect: the worker's BatchScheduler decodes single streams (greedy, the same
prompts) alone, then beside a process that busy-loops for a given share of one core (a duty cycle
over a short period, as the broker's request threads wake per decode step), at each thread count.
Every figure is printed as a ratio to the run without the neighbour, in the same run.

Usage: .venv/bin/python bench/bench_neighbour.py [--threads 1,2] [--duty 0.15,0.3] [--period-ms 2]
       [--requests 6] [--tokens 96] [--variant fp32]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys

from _common import REPO
from bench_streaming import engine_run


def neighbour(duty: float, period_s: float) -> subprocess.Popen[bytes]:
    """A process that spins for ``duty`` of every ``period_s`` and sleeps the rest."""
    code = (f"import time\nwhile True:\n    t = time.perf_counter()\n"
            f"    while time.perf_counter() - t < {duty * period_s}:\n        pass\n"
            f"    time.sleep({(1 - duty) * period_s})\n")
    return subprocess.Popen([sys.executable, "-c", code])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--duty", default="0.15,0.3", help="shares of one core the neighbour takes")
    ap.add_argument("--period-ms", type=float, default=2.0)
    ap.add_argument("--requests", type=int, default=6)
    ap.add_argument("--tokens", type=int, default=96)
    ap.add_argument("--variant", default="fp32")
    args = ap.parse_args()

    from inference.autonomy_profiles import AutonomyProfiles
    from inference.engine import prepare
    from inference.model_files import load_model
    from lotabots.settings import Settings

    profile = AutonomyProfiles.load(Settings().autonomy_profiles_path).for_level(None)
    duties = [0.0] + [float(d) for d in args.duty.split(",")]
    for threads in (int(t) for t in args.threads.split(",")):
        model = prepare(load_model(REPO / ".data" / "models", variant=args.variant, threads=threads))
        engine_run(model, profile, [0], 8)  # warm-up
        alone = 0.0
        for duty in duties:
            other = neighbour(duty, args.period_ms / 1000) if duty else None
            try:
                rates = [engine_run(model, profile, [i], args.tokens)[0]["chars_s"] for i in range(args.requests)]
            finally:
                if other is not None:
                    other.kill()
                    other.wait()
            rate = statistics.mean(rates)
            alone = alone or rate
            print(f"{args.variant}, {threads} thread(s), neighbour {duty:4.0%} of a core: "
                  f"{rate:6.1f} chars/s, ratio to alone {rate / alone:5.3f}", flush=True)


if __name__ == "__main__":
    main()
