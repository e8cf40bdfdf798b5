"""Next-token choice: greedy (temperature 0) or seeded temperature + nucleus (top-p) sampling."""

from __future__ import annotations

import numpy as np


class TokenSampler:
    """Per-sequence sampler; a given seed reproduces the same tokens for the same logits."""

    def __init__(self, temperature: float, top_p: float, seed: int | None) -> None:
        self.temperature = temperature
        self.top_p = top_p
        self.rng = np.random.default_rng(seed)

    def __call__(self, logits: np.ndarray) -> int:
        if self.temperature <= 0.0:
            return int(np.argmax(logits))
        scaled = logits.astype(np.float64) / self.temperature
        scaled -= scaled.max()
        probs = np.exp(scaled)
        probs /= probs.sum()
        if self.top_p < 1.0:
            order = np.argsort(-probs)
            sorted_probs = probs[order]
            keep = int(np.searchsorted(np.cumsum(sorted_probs), self.top_p) + 1)
            order = order[:keep]
            kept = sorted_probs[:keep] / sorted_probs[:keep].sum()
            return int(order[self.rng.choice(keep, p=kept)])
        return int(self.rng.choice(probs.shape[0], p=probs))
