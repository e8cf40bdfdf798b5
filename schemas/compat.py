"""Backward-compatibility check between two JSON Schemas of one wire model.

A new schema is compatible with an old one when every message a consumer of the old schema accepts
can still be produced, and consumers of the new schema read old messages: no property removed, no
property's type changed, no new required property, no enum value removed.
"""

from __future__ import annotations

from typing import Any


def _resolve(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    ref = node.get("$ref")
    if ref and ref.startswith("#/$defs/"):
        return schema.get("$defs", {}).get(ref.split("/")[-1], {})
    return node


def _types(schema: dict[str, Any], node: dict[str, Any]) -> set[str]:
    node = _resolve(schema, node)
    if "anyOf" in node:
        out: set[str] = set()
        for alt in node["anyOf"]:
            out |= _types(schema, alt)
        return out
    if "enum" in node:
        return {f"enum:{v}" for v in node["enum"]}
    if "const" in node:
        return {f"enum:{node['const']}"}
    t = node.get("type")
    if isinstance(t, list):
        return set(t)
    return {t} if t else {"any"}


def incompatibilities(old: dict[str, Any], new: dict[str, Any], path: str = "") -> list[str]:
    """List the reasons ``new`` is not backward compatible with ``old`` (empty when compatible)."""
    problems: list[str] = []
    return _compare(old, old, new, new, path or "$", problems)


def _compare(
    old_root: dict[str, Any], old: dict[str, Any], new_root: dict[str, Any], new: dict[str, Any], path: str,
    problems: list[str],
) -> list[str]:
    old = _resolve(old_root, old)
    new = _resolve(new_root, new)
    old_props = old.get("properties", {})
    new_props = new.get("properties", {})
    for name in old_props:
        if name not in new_props:
            problems.append(f"{path}.{name}: property removed")
    for name in set(new.get("required", [])) - set(old.get("required", [])):
        problems.append(f"{path}.{name}: became required")
    for name, old_node in old_props.items():
        if name not in new_props:
            continue
        old_t, new_t = _types(old_root, old_node), _types(new_root, new_props[name])
        if not old_t <= new_t and "any" not in new_t:
            problems.append(f"{path}.{name}: type {sorted(old_t)} -> {sorted(new_t)}")
        o, n = _resolve(old_root, old_node), _resolve(new_root, new_props[name])
        if "properties" in o or "properties" in n:
            _compare(old_root, o, new_root, n, f"{path}.{name}", problems)
        if "items" in o and "items" in n:
            _compare(old_root, o["items"], new_root, n["items"], f"{path}.{name}[]", problems)
    return problems
