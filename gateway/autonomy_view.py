"""The `autonomy` block of the request resource: the level, the rule that set it, what the user got,
the human decision, and when the requested action runs (docs/autonomy.md)."""

from __future__ import annotations

from typing import Any

from schemas.autonomy_levels import AutonomyLevel, split_suggestions


def autonomy_view(row: Any) -> dict[str, Any] | None:
    level_name = getattr(row, "autonomy_level", None)
    if not level_name:
        return None  # a request from before autonomy levels existed
    level = AutonomyLevel(level_name)
    decided_at = getattr(row, "decided_at", None)
    view: dict[str, Any] = {
        "level": level.value,
        "rule": getattr(row, "autonomy_rule", None),
        "task": getattr(row, "task", None),
        "context": getattr(row, "context", None),
        "no_ai": not level.invokes_model,
        "presentation": level.presentation,
        "needs_decision": level.needs_decision and getattr(row, "decision", None) is None,
        "decision": None if getattr(row, "decision", None) is None else {
            "kind": row.decision, "by": getattr(row, "decided_by", None),
            "at": decided_at.isoformat() if decided_at else None,
        },
        "action": None,
    }
    if level is AutonomyLevel.ASSISTED:
        view["suggestions"] = split_suggestions(getattr(row, "output", None))
    action = getattr(row, "action", None)
    if action:
        view["action"] = {**action, "runs": level.action_runs}
    return view
