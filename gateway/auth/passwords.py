"""bcrypt hashing on a dedicated thread pool, so a burst of logins never blocks the event loop."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import bcrypt

from gateway.auth.policy import BCRYPT_MAX_BYTES

T = TypeVar("T")


class PasswordHasher:
    """Hashes and checks passwords off the event loop (bcrypt releases the GIL while it works).

    A dedicated pool bounds how many CPUs logins may take and keeps the loop's default executor free for
    everything else. Checking against a missing hash still spends one bcrypt run (on a dummy hash), so
    unknown accounts answer in the same time as wrong passwords.
    """

    def __init__(self, rounds: int = 12, workers: int = 0) -> None:
        self._rounds = rounds
        # Default: all CPUs but one, so a login burst leaves a core for the event loop.
        workers = workers or max(1, (os.cpu_count() or 2) - 1)
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="bcrypt")
        self._dummy = bcrypt.hashpw(os.urandom(16).hex().encode(), bcrypt.gensalt(rounds))

    async def hash(self, password: str) -> str:
        raw = self._bytes(password)
        digest = await self._run(bcrypt.hashpw, raw, bcrypt.gensalt(self._rounds))
        return digest.decode()

    async def verify(self, password: str, password_hash: str | None) -> bool:
        """True only for a matching real hash. Never raises on bad input: it is simply not a match."""
        raw = password.encode()
        if len(raw) > BCRYPT_MAX_BYTES:
            raw = raw[:BCRYPT_MAX_BYTES]
            password_hash = None  # cannot match anything we stored; still spend the time
        target = password_hash.encode() if password_hash else self._dummy
        try:
            matched = await self._run(bcrypt.checkpw, raw, target)
        except ValueError:  # a corrupt stored hash is a non-match, not a 500
            return False
        return bool(matched) and password_hash is not None

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    @staticmethod
    def _bytes(password: str) -> bytes:
        raw = password.encode()
        if len(raw) > BCRYPT_MAX_BYTES:  # callers check the policy first; this is the last line
            raise ValueError("password longer than 72 bytes")
        return raw

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
