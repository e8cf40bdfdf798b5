"""Two faust-streaming 0.15.3 defects that can lose a usage fact, closed by subclasses the usage app uses.

Found by ``tests/usage/test_billing_exact.py`` (a free tenant billed 5 requests of 6): after a SIGKILL the
restarted Faust worker skipped ``usage.events`` offset 143 of partition 7 and committed 158 without ever
handing 143 to the agent. Together, the two defects turn a race into a lost fact:

1. **Recovery hands out records across the seek.** When table recovery completes, Faust resumes the
   stream partitions, *then* seeks them to the committed offsets, *then* clears its in-memory queues and
   resumes the flow — while the fetcher, still running from the changelog reads, goes on delivering. A
   fetch that lands between the resume and the seek delivers the backlog (143…157) early: the queue clear
   drops the head (143) and the deliveries after it move Faust's read offset to 157, so the refetch from
   the seek drops 143…156 as "already read". ``OrderedRecovery`` stops the flow before Faust resumes the
   stream partitions; Faust's own code resumes it after the seek and the clear, so the first stream
   record is delivered from the committed offset.
2. **The commit steps over an unacked head.** ``Consumer._new_offset`` withholds a commit only when the
   acked run starts *more than one* offset past the committed one, so with 143 unacked and 144…157 acked
   it commits 158 (faust-streaming issue #606, PR #707, open). ``GuardedConsumer`` withholds it while the
   committed offset's own message is neither acked nor a gap Faust saw: a message that never came back
   stalls the commit (re-read after the next restart, lag visible) instead of being skipped. The topics
   the app reads carry no transaction markers (no producer of the platform is transactional), so a one-
   offset gap at the head is never a legitimate one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from faust.tables.manager import TableManager
from faust.tables.recovery import Recovery
from faust.transport.drivers import aiokafka as faust_aiokafka


def head_is_unacked(committed: int | None, acked: Sequence[int], in_gap: Callable[[int], bool]) -> bool:
    """Later offsets are acked but the message at ``committed`` (the next one to commit) is not, nor a gap."""
    if committed is None or not acked:
        return False
    return min(acked) > committed and not in_gap(committed)


class GuardedConsumer(faust_aiokafka.Consumer):
    """Faust's aiokafka consumer that never commits past a message it has not acked."""

    def _new_offset(self, tp: Any) -> int | None:
        if head_is_unacked(self._committed_offset[tp], self._acked[tp], self._gap[tp].overlaps):
            return None
        return super()._new_offset(tp)


class GuardedTransport(faust_aiokafka.Transport):
    Consumer = GuardedConsumer


class OrderedRecovery(Recovery):
    """Recovery that lets no stream record through until the seek to the committed offsets is done."""

    async def on_recovery_completed(self, generation_id: int = 0) -> None:
        self.app.consumer.stop_flow()  # Faust resumes it after perform_seek and the queue clear
        await super().on_recovery_completed(generation_id)

    async def _resume_streams(self, generation_id: int = 0) -> None:  # the app without tables: same order
        self.app.consumer.stop_flow()
        await super()._resume_streams(generation_id)


class OrderedTableManager(TableManager):
    @property
    def recovery(self) -> Recovery:
        if self._recovery is None:
            self._recovery = OrderedRecovery(self.app, self, beacon=self.beacon, loop=self.loop)
        return self._recovery
