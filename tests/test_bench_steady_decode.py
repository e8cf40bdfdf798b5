"""The steady decode rate that bench_variants.py and bench_llamacpp.py report (bench/bench_inference.py):
the longest run of consecutive decode calls with every sequence in the batch, prefills excluded."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"


@pytest.fixture(scope="module")
def bench_inference():  # type: ignore[no-untyped-def]
    sys.path.insert(0, str(BENCH))
    try:
        yield importlib.import_module("bench_inference")
    finally:
        sys.path.remove(str(BENCH))


class _Model:
    num_layers = 1

    def forward(self, input_ids, attention_mask, position_ids, past):  # type: ignore[no-untyped-def]
        return np.zeros((input_ids.shape[0], 4), np.float32), past


def test_only_calls_of_one_token_per_row_count_as_decode(bench_inference) -> None:  # type: ignore[no-untyped-def]
    clock = bench_inference._StepClock(_Model())
    clock.forward(np.zeros((1, 40), np.int64), None, None, [])  # a prefill
    clock.forward(np.zeros((3, 1), np.int64), None, None, [])
    assert [rows for _, rows in clock.decode_starts] == [3]
    assert clock.num_layers == 1  # everything else is the model's own


def test_the_rate_is_taken_over_the_longest_run_with_every_row(bench_inference) -> None:  # type: ignore[no-untyped-def]
    clock = bench_inference._StepClock(_Model())
    # ramp-up (1 and 2 rows, a prefill between), 4 steps of 3 rows 0.1 s apart, a pause, 2 more of 3 rows
    clock.decode_starts = [(0.0, 1), (0.5, 2), (1.0, 3), (1.1, 3), (1.2, 3), (1.3, 3), (1.4, 2),
                           (5.0, 3), (5.1, 3)]
    assert clock.steady_decode_tok_s(3) == pytest.approx(3 * 3 / 0.3)
    assert clock.steady_decode_tok_s(1) is None  # a single call is no rate
    assert clock.steady_decode_tok_s(4) is None
