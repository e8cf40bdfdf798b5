"""Prefix KV cache: the key/value cache of recent sequences, reused by prompts that start the same way.

A follow-up turn of a conversation repeats the whole conversation so far; every request of an autonomy
level starts with that level's system prompt; few-shot preambles repeat verbatim. The scheduler keeps
the KV cache of each sequence it finished (prompt and generated tokens) and of each prompt it prefilled,
and a new prompt that shares a prefix with one of them starts its prefill after that prefix instead of
at token 0.

Prefixes are matched in blocks of ``block`` tokens: entry ``e`` is indexed under the chained hash of
each of its first k·block tokens, so finding the longest cached prefix of a prompt is one hash per
block of the prompt, and a hit is confirmed on the tokens themselves (a hash collision can never reuse a
wrong cache). At least one prompt token is always left to compute, since its logits pick the first
generated token. Memory is bounded (``max_bytes``) with least-recently-used eviction; an entry whose
tokens are a prefix of a newer entry's is dropped (the newer one serves every prompt it served).

Arrays are never written in place by the scheduler or by ONNX Runtime (each step returns new arrays), so
an entry may hold the prefill's own arrays without a copy; a row cut out of the running batch is
copied, so the entry does not keep the whole batch alive.
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
from prometheus_client import REGISTRY
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

KV = tuple[np.ndarray, np.ndarray]


@dataclass
class PrefixHit:
    """The cached KV cache of a prompt's first ``tokens`` tokens (one row, ``tokens`` columns)."""

    tokens: int
    past: list[KV]


@dataclass
class _Entry:
    tokens: tuple[int, ...]
    past: list[KV]
    nbytes: int
    keys: list[int] = field(default_factory=list)


@dataclass
class PrefixCacheStats:
    lookups: int = 0
    hits: int = 0
    tokens_reused: int = 0  # prompt tokens whose prefill a hit saved
    tokens_looked_up: int = 0  # prompt tokens of every lookup
    inserts: int = 0
    evictions: int = 0
    entries: int = 0
    bytes: int = 0


class PrefixCache:
    """Bounded LRU of per-sequence KV caches, looked up by longest shared token prefix. Thread-safe."""

    def __init__(self, max_bytes: int, *, block: int = 16) -> None:
        if block < 1:
            raise ValueError("block must be ≥ 1")
        self.max_bytes = int(max_bytes)
        self.block = int(block)
        self._entries: OrderedDict[int, _Entry] = OrderedDict()  # id → entry, least recently used first
        self._index: dict[int, int] = {}  # chained hash of a block-aligned prefix → entry id
        self._next_id = 0
        self._lock = threading.Lock()
        self.stats = PrefixCacheStats()

    @property
    def enabled(self) -> bool:
        return self.max_bytes > 0

    def _chain(self, tokens: Sequence[int], limit: int) -> list[int]:
        """Chained hashes of tokens[:b], tokens[:2b], … up to ``limit`` tokens."""
        out: list[int] = []
        h = 0
        b = self.block
        for end in range(b, limit + 1, b):
            h = hash((h, tuple(tokens[end - b:end])))
            out.append(h)
        return out

    def lookup(self, prompt: Sequence[int]) -> PrefixHit | None:
        """The longest cached block-aligned prefix of ``prompt`` that leaves ≥ 1 token to compute."""
        if not self.enabled:
            return None
        chain = self._chain(prompt, len(prompt) - 1)
        with self._lock:
            self.stats.lookups += 1
            self.stats.tokens_looked_up += len(prompt)
            for n in range(len(chain), 0, -1):
                entry_id = self._index.get(chain[n - 1])
                if entry_id is None:
                    continue
                entry = self._entries[entry_id]
                length = n * self.block
                if tuple(prompt[:length]) != entry.tokens[:length]:
                    continue  # a hash collision: never reuse another prompt's cache
                self._entries.move_to_end(entry_id)
                self.stats.hits += 1
                self.stats.tokens_reused += length
                past = entry.past
                break
            else:
                return None
        if past[0][0].shape[2] != length:
            past = [(np.ascontiguousarray(k[:, :, :length]), np.ascontiguousarray(v[:, :, :length]))
                    for k, v in past]
        return PrefixHit(length, past)

    def insert(self, tokens: Sequence[int], past: list[KV]) -> None:
        """Keep ``past`` (one row whose columns are ``tokens``' KV) for later prompts."""
        if not self.enabled or len(tokens) < self.block:
            return
        length = past[0][0].shape[2]
        if length != len(tokens):
            raise ValueError(f"KV cache has {length} columns for {len(tokens)} tokens")
        nbytes = sum(k.nbytes + v.nbytes for k, v in past)
        if nbytes > self.max_bytes:
            return
        chain = self._chain(tokens, len(tokens))
        key = tuple(tokens)
        with self._lock:
            # an older entry that this one extends (same turn, longer) serves nothing this one does not
            for h in chain:
                old_id = self._index.get(h)
                if old_id is None:
                    continue
                old = self._entries.get(old_id)
                if old is not None and len(old.tokens) <= len(key) and key[:len(old.tokens)] == old.tokens:
                    if old.tokens == key:
                        self._entries.move_to_end(old_id)
                        return  # already cached
                    self._remove(old_id)
            entry_id = self._next_id
            self._next_id += 1
            self._entries[entry_id] = _Entry(key, past, nbytes, chain)
            for h in chain:
                self._index[h] = entry_id
            self.stats.inserts += 1
            self.stats.bytes += nbytes
            while self.stats.bytes > self.max_bytes and self._entries:
                self._remove(next(iter(self._entries)))
                self.stats.evictions += 1
            self.stats.entries = len(self._entries)

    def _remove(self, entry_id: int) -> None:
        entry = self._entries.pop(entry_id)
        for h in entry.keys:
            if self._index.get(h) == entry_id:
                del self._index[h]
        self.stats.bytes -= entry.nbytes
        self.stats.entries = len(self._entries)


class _PrefixCacheMetrics:
    """Prometheus view of the process's prefix caches, labelled by tier (read at scrape time)."""

    def __init__(self) -> None:
        self._caches: weakref.WeakValueDictionary[str, PrefixCache] = weakref.WeakValueDictionary()

    def watch(self, tier: str, cache: PrefixCache) -> None:
        self._caches[tier] = cache

    def collect(self) -> Iterator[Metric]:
        counters = {
            "lookups": ("lotabots_prefix_cache_lookups", "prompts looked up in the prefix KV cache"),
            "hits": ("lotabots_prefix_cache_hits", "prompts that reused a cached prefix"),
            "tokens_reused": ("lotabots_prefix_cache_tokens_reused", "prompt tokens not recomputed thanks to the cache"),
            "tokens_looked_up": ("lotabots_prefix_cache_prompt_tokens", "prompt tokens of every lookup"),
            "evictions": ("lotabots_prefix_cache_evictions", "entries evicted to stay within the memory bound"),
        }
        gauges = {
            "bytes": ("lotabots_prefix_cache_bytes", "memory held by cached KV"),
            "entries": ("lotabots_prefix_cache_entries", "cached sequences"),
        }
        caches = list(self._caches.items())
        for field_name, (name, doc) in counters.items():
            family = CounterMetricFamily(name, doc, labels=["tier"])
            for tier, cache in caches:
                family.add_metric([tier], getattr(cache.stats, field_name))
            yield family
        for field_name, (name, doc) in gauges.items():
            family = GaugeMetricFamily(name, doc, labels=["tier"])
            for tier, cache in caches:
                family.add_metric([tier], getattr(cache.stats, field_name))
            yield family


PREFIX_CACHE_METRICS = _PrefixCacheMetrics()
REGISTRY.register(PREFIX_CACHE_METRICS)  # type: ignore[arg-type]
