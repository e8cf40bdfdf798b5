"""Per-level prompt templates and generation settings (inference/autonomy_profiles.toml), as the
inference worker applies them to a request of a given level of autonomy (docs/autonomy.md)."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from schemas.autonomy_levels import PLATFORM_DEFAULT_LEVEL, AutonomyLevel
from schemas.events import LifecycleType

DEFAULT_PATH = Path(__file__).with_name("autonomy_profiles.toml")


@dataclass(frozen=True)
class AutonomyProfile:
    """How one level shapes a generation."""

    level: AutonomyLevel
    system: str = ""
    max_tokens: int = 0
    temperature: float | None = None
    ends: LifecycleType = LifecycleType.SUCCEEDED

    def messages(self, messages: list[dict[str, str]]) -> list[dict[str, str]]:
        """The conversation with this level's instruction in front (merged into a client system turn)."""
        if not self.system:
            return messages
        if messages and messages[0]["role"] == "system":
            return [{"role": "system", "content": f"{self.system}\n\n{messages[0]['content']}"}, *messages[1:]]
        return [{"role": "system", "content": self.system}, *messages]

    def cap_tokens(self, max_tokens: int) -> int:
        return min(max_tokens, self.max_tokens) if self.max_tokens > 0 else max_tokens


class AutonomyProfiles:
    """All levels' profiles; a level without one runs as Agent (the request as sent)."""

    def __init__(self, profiles: dict[AutonomyLevel, AutonomyProfile]) -> None:
        self.profiles = profiles

    @classmethod
    def load(cls, path: Path | None = None) -> AutonomyProfiles:
        data: dict[str, Any] = tomllib.loads((path or DEFAULT_PATH).read_text())
        profiles = {}
        for name, spec in data.get("levels", {}).items():
            level = AutonomyLevel(name)
            if not level.invokes_model:
                raise ValueError("the no_ai level never reaches a worker and takes no profile")
            ends = LifecycleType(spec.get("ends", "succeeded"))
            if ends not in (LifecycleType.SUCCEEDED, LifecycleType.AWAITING_APPROVAL):
                raise ValueError(f"{name}: `ends` must be succeeded or awaiting_approval")
            profiles[level] = AutonomyProfile(level, str(spec.get("system", "")), int(spec.get("max_tokens", 0)),
                                              spec.get("temperature"), ends)
        return cls(profiles)

    def for_level(self, name: str | None) -> AutonomyProfile:
        level = AutonomyLevel(name) if name else PLATFORM_DEFAULT_LEVEL
        return self.profiles.get(level) or AutonomyProfile(level)
