"""ChatML prompt rendering in plain Python (no jinja at runtime).

:func:`render_chat` reproduces SmolLM2-Instruct's chat template (stored verbatim in the GGUF and in
``model_config.json``; :data:`SMOLLM2_CHAT_TEMPLATE` is a copy): a default system prompt is injected when
the first message is not a system message, each message is ``<|im_start|>{role}\\n{content}<|im_end|>\\n``,
and the generation prompt is ``<|im_start|>assistant\\n``.  Tests compare it with jinja2 rendering of
the stored template.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
DEFAULT_SYSTEM_PROMPT = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"

SMOLLM2_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def _turn(role: str, content: str) -> str:
    return f"{IM_START}{role}\n{content}{IM_END}\n"


def render_chat(messages: Sequence[Mapping[str, str]], add_generation_prompt: bool = True) -> str:
    """Render ``[{"role": ..., "content": ...}, ...]`` exactly as the GGUF's jinja template does.

    Raises ``ValueError`` for a message without a string ``role`` and ``content`` (the template would
    fail on those too).
    """
    parts: list[str] = []
    for i, message in enumerate(messages):
        role, content = message.get("role"), message.get("content")
        if not isinstance(role, str) or not isinstance(content, str):
            raise ValueError(f"message {i} needs string 'role' and 'content'")
        if i == 0 and role != "system":
            parts.append(_turn("system", DEFAULT_SYSTEM_PROMPT))
        parts.append(_turn(role, content))
    if add_generation_prompt:
        parts.append(f"{IM_START}assistant\n")
    return "".join(parts)


def chat_segments(messages: Sequence[Mapping[str, str]], add_generation_prompt: bool = True) -> list[tuple[str, bool]]:
    """The rendered prompt as (text, is_template) pieces, in order; ``"".join`` of the texts equals
    :func:`render_chat`. User-supplied content is a separate piece so it can be tokenised with special
    tokens treated as plain text: a message containing ``<|im_start|>`` cannot forge a chat turn.
    """
    pieces: list[tuple[str, bool]] = []
    for i, message in enumerate(messages):
        role, content = message.get("role"), message.get("content")
        if not isinstance(role, str) or not isinstance(content, str):
            raise ValueError(f"message {i} needs string 'role' and 'content'")
        if i == 0 and role != "system":
            pieces.append((_turn("system", DEFAULT_SYSTEM_PROMPT), True))
        pieces.append((f"{IM_START}{role}\n", True))
        if content:
            pieces.append((content, False))
        pieces.append((f"{IM_END}\n", True))
    if add_generation_prompt:
        pieces.append((f"{IM_START}assistant\n", True))
    return pieces
