"""Token quota arithmetic: what a submit reserves, and the UTC day/month a token count belongs to.

Quotas count prompt + completion tokens per UTC calendar day and month, the same tumbling windows the
Faust app keeps on ``usage.quota-state`` (schemas.usage.QuotaState): a request's tokens belong to the day
and month in which it ended.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

from schemas.events import ChatMessage

# Bytes the chat template adds around each message (`<|im_start|>` role `\n` ... `<|im_end|>\n`), the
# default system turn it injects when the first message is not a system message, and the generation
# prompt. Mirrors inference.chat.render_chat without importing the inference package into the gateway.
_TURN_OVERHEAD = len("<|im_start|>") + len("\n") + len("<|im_end|>\n")
_DEFAULT_SYSTEM_TURN = _TURN_OVERHEAD + len("system") + len(
    "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
)
_GENERATION_PROMPT = len("<|im_start|>assistant\n")


def prompt_token_bound(messages: Iterable[ChatMessage]) -> int:
    """An upper bound of the prompt's token count: the UTF-8 length of the rendered chat prompt.

    A byte-level BPE token (SmolLM2, the GPT-2 and Llama-3 families) spans at least one byte, so a prompt
    never has more tokens than bytes. Reserving it keeps the quota bound honest: a reservation of
    `max_tokens` alone would let every concurrent request overshoot by its prompt.
    """
    total = _GENERATION_PROMPT
    first = True
    for message in messages:
        if first and message.role != "system":
            total += _DEFAULT_SYSTEM_TURN
        first = False
        content = message.content
        total += _TURN_OVERHEAD + len(message.role) + (len(content) if content.isascii() else len(content.encode()))
    return total


class UtcPeriods:
    """Today's day ("YYYY-MM-DD") and month ("YYYY-MM") labels, recomputed only when the day changes."""

    __slots__ = ("_day_index", "day", "month", "day_ends_at", "month_ends_at")

    def __init__(self) -> None:
        self._day_index = -1
        self.day = self.month = ""
        self.day_ends_at = self.month_ends_at = 0.0

    def at(self, epoch_s: float) -> UtcPeriods:
        index = int(epoch_s // 86400)
        if index != self._day_index:
            self._day_index = index
            moment = datetime.fromtimestamp(index * 86400, UTC)
            self.day, self.month = day_label(moment), month_label(moment)
            self.day_ends_at = (index + 1) * 86400.0
            nxt = datetime(moment.year + (moment.month == 12), moment.month % 12 + 1, 1, tzinfo=UTC)
            self.month_ends_at = nxt.timestamp()
        return self


def day_label(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d")


def month_label(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m")
