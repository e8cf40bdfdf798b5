"""The levels of autonomy in human-AI interaction (docs/autonomy.md): vocabulary shared by the gateway,
the inference worker, the webhook dispatcher and the usage pipeline.

Levels are ordered from least to most AI autonomy; a rule or a request may only move a request DOWN
this order from its ceiling.
"""

from __future__ import annotations

import re
from enum import StrEnum


class AutonomyLevel(StrEnum):
    NO_AI = "no_ai"
    ASSISTED = "assisted"
    COLLABORATOR = "collaborator"
    EXPERT = "expert"
    AGENT = "agent"

    @property
    def rank(self) -> int:
        return _ORDER.index(self)

    @property
    def invokes_model(self) -> bool:
        return self is not AutonomyLevel.NO_AI

    @property
    def needs_decision(self) -> bool:
        """The request ends `awaiting_approval` and a human decides (approve, edit, reject)."""
        return self in (AutonomyLevel.COLLABORATOR, AutonomyLevel.EXPERT)

    @property
    def allows_actions(self) -> bool:
        return self in (AutonomyLevel.COLLABORATOR, AutonomyLevel.EXPERT, AutonomyLevel.AGENT)

    @property
    def presentation(self) -> str | None:
        """What the user gets: suggestions, a draft, advice, or the final answer (None: no AI output)."""
        return _PRESENTATION[self]

    @property
    def action_runs(self) -> str:
        """When a requested action runs at this level."""
        return _ACTION_RUNS[self]


_ORDER = [AutonomyLevel.NO_AI, AutonomyLevel.ASSISTED, AutonomyLevel.COLLABORATOR, AutonomyLevel.EXPERT,
          AutonomyLevel.AGENT]
_PRESENTATION = {
    AutonomyLevel.NO_AI: None, AutonomyLevel.ASSISTED: "suggestions", AutonomyLevel.COLLABORATOR: "draft",
    AutonomyLevel.EXPERT: "advice", AutonomyLevel.AGENT: "final",
}
_ACTION_RUNS = {
    AutonomyLevel.NO_AI: "never", AutonomyLevel.ASSISTED: "never", AutonomyLevel.COLLABORATOR: "after_acceptance",
    AutonomyLevel.EXPERT: "after_confirmation", AutonomyLevel.AGENT: "immediately",
}
# Until a tenant configures anything, requests run as they always have: the model's final answer.
PLATFORM_DEFAULT_LEVEL = AutonomyLevel.AGENT
NO_AI_FINISH_REASON = "no_ai"
ACTION_EVENT_TYPE = "request.action"

_NUMBERING = re.compile(r"^\s*(?:[-*\u2022]|\(?\d{1,2}[.):]|[A-Ca-c][.)])\s*")


def split_suggestions(text: str | None, limit: int = 3) -> list[str]:
    """An Assisted generation as its candidate suggestions: one per non-empty line, numbering stripped;
    the whole text as one candidate when it has no line structure."""
    if not text or not text.strip():
        return []
    lines = [_NUMBERING.sub("", line).strip() for line in text.splitlines()]
    found = [line for line in lines if line]
    return found[:limit] or [text.strip()]
