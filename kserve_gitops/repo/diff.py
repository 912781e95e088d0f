"""The one object diff: which objects were added, removed or changed between two sets of
rendered manifests, and for each change the fields that differ. Both `make diff FROM= TO=` (two
environments) and `make diff BASE=` (two revisions) go through `compare` and `format_changes`.

Noise is normalised before comparing: kustomize's content-hash suffix of generated ConfigMaps and
Secrets (in their names and wherever they are referenced), key order, and the layout and comments
of YAML documents embedded in strings (a values file reformatted is not a change).
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

import yaml

# kustomize appends a 10-character hash of the content, spelled from hex digits with 0, 1, 3, a
# and e replaced by g, h, k, m, t (api/hasher), so names such as `-controller` never match.
_GENERATED_HASH = re.compile(r"-[24-9bcdfghkmt]{10}$")
_PLAIN_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")
# Beyond this many lines an object's entry is cut short (a CRD bump changes thousands of fields).
MAX_LINES_PER_OBJECT = 120


class _Missing:
    def __repr__(self) -> str:
        return "(absent)"


MISSING: Any = _Missing()


@dataclass(frozen=True)
class FieldChange:
    """One field that differs; `before` or `after` is MISSING when the field was added/removed."""

    path: str
    before: Any
    after: Any


@dataclass(frozen=True)
class ObjectChange:
    key: str  # "Kind namespace/name" (or "Kind name" without a namespace)
    status: Literal["added", "removed", "changed"]
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    fields: tuple[FieldChange, ...] = ()


def object_key(body: dict[str, Any]) -> str:
    meta = body.get("metadata") if isinstance(body.get("metadata"), dict) else {}
    kind, name, ns = body.get("kind", "?"), meta.get("name", "?"), meta.get("namespace")
    return f"{kind} {ns}/{name}" if ns else f"{kind} {name}"


def _replace_strings(node: Any, names: dict[str, str]) -> Any:
    if isinstance(node, str):
        for hashed, stable in names.items():
            node = node.replace(hashed, stable)
        return node
    if isinstance(node, list):
        return [_replace_strings(n, names) for n in node]
    if isinstance(node, dict):
        return {k: _replace_strings(v, names) for k, v in node.items()}
    return node


def normalise(bodies: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Objects by key, with generated names' hash suffixes stripped everywhere they occur.
    An object rendered twice with the same content (a layer and the overlay that includes it)
    counts once; two different objects under one key are both kept (`key #2`)."""
    bodies = list(bodies)
    hashed: dict[str, str] = {}
    for body in bodies:
        name = str((body.get("metadata") or {}).get("name", ""))
        if body.get("kind") in ("ConfigMap", "Secret") and _GENERATED_HASH.search(name):
            hashed[name] = _GENERATED_HASH.sub("", name)
    out: dict[str, dict[str, Any]] = {}
    for body in bodies:
        stable = _replace_strings(body, hashed) if hashed else body
        key = object_key(stable)
        n = 1
        while key in out and out[key] != stable:
            n += 1
            key = f"{object_key(stable)} #{n}"
        out[key] = stable
    return out


def compare(
    before: Iterable[dict[str, Any]], after: Iterable[dict[str, Any]]
) -> list[ObjectChange]:
    """What changes from `before` to `after`, sorted by object key."""
    old, new = normalise(before), normalise(after)
    changes: list[ObjectChange] = []
    for key in sorted(old.keys() | new.keys()):
        a, b = old.get(key), new.get(key)
        if a is None:
            changes.append(ObjectChange(key, "added", None, b))
        elif b is None:
            changes.append(ObjectChange(key, "removed", a, None))
        else:
            fields = field_changes(a, b)
            if fields:
                changes.append(ObjectChange(key, "changed", a, b, tuple(fields)))
    return changes


def _join(path: str, key: Any) -> str:
    """`spec.predictor`, `metadata.annotations["serving.kserve.io/deploymentMode"]`."""
    key = str(key)
    if not _PLAIN_KEY.match(key):
        return f"{path}[{json.dumps(key)}]"
    return f"{path}.{key}" if path else key


def _embedded_yaml(text: str) -> Any:
    """A multi-line string holding a YAML mapping or list (a values file in a ConfigMap), parsed;
    MISSING for anything else."""
    if "\n" not in text.strip():
        return MISSING
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        return MISSING
    return data if isinstance(data, dict | list) else MISSING


def _item_key(item: Any) -> str | None:
    if isinstance(item, dict) and isinstance(item.get("name"), str):
        return item["name"]
    return None


def field_changes(a: Any, b: Any, path: str = "") -> list[FieldChange]:
    """The fields that differ between `a` and `b`. Maps are compared key by key; lists of named
    items (containers, env, ports) by name; other lists are aligned item by item so an insertion
    shows as one added item; embedded YAML documents are compared as data."""
    if a == b:
        return []
    if isinstance(a, dict) and isinstance(b, dict):
        out: list[FieldChange] = []
        for key in [*a, *(k for k in b if k not in a)]:
            out += field_changes(a.get(key, MISSING), b.get(key, MISSING), _join(path, key))
        return out
    if isinstance(a, list) and isinstance(b, list):
        return _list_changes(a, b, path)
    if isinstance(a, str) and isinstance(b, str):
        da, db = _embedded_yaml(a), _embedded_yaml(b)
        if da is not MISSING and db is not MISSING:
            return field_changes(da, db, path)
    return [FieldChange(path or ".", a, b)]


def _list_changes(a: list[Any], b: list[Any], path: str) -> list[FieldChange]:
    names_a, names_b = [_item_key(i) for i in a], [_item_key(i) for i in b]
    unique = all(names_a) and all(names_b)
    unique = unique and len(set(names_a)) == len(a) and len(set(names_b)) == len(b)
    if unique and a and b:
        by_a, by_b = dict(zip(names_a, a, strict=True)), dict(zip(names_b, b, strict=True))
        out: list[FieldChange] = []
        for name in [*names_a, *(n for n in names_b if n not in by_a)]:
            seg = f"[name={name}]"
            out += field_changes(by_a.get(name, MISSING), by_b.get(name, MISSING), path + seg)
        return out
    ja = [json.dumps(i, sort_keys=True) for i in a]
    jb = [json.dumps(i, sort_keys=True) for i in b]
    out = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, ja, jb, autojunk=False).get_opcodes():
        if op == "equal":
            continue
        if op == "replace" and i2 - i1 == j2 - j1:
            for k in range(i2 - i1):
                out += field_changes(a[i1 + k], b[j1 + k], f"{path}[{j1 + k}]")
            continue
        out += [FieldChange(f"{path}[{i}]", a[i], MISSING) for i in range(i1, i2)]
        out += [FieldChange(f"{path}[{j}]", MISSING, b[j]) for j in range(j1, j2)]
    return out


def _value_lines(sign: str, label: str, value: Any, indent: str) -> list[str]:
    """`label: value` on one line when short, else the value as an indented YAML block."""
    if not isinstance(value, dict | list | str) or (
        isinstance(value, str) and "\n" not in value and len(value) <= 100
    ):
        return [f"{sign}{indent}{label}: {json.dumps(value)}"]
    if isinstance(value, dict | list) and len(json.dumps(value)) <= 80:
        return [f"{sign}{indent}{label}: {json.dumps(value, sort_keys=True)}"]
    block = value if isinstance(value, str) else yaml.safe_dump(value, sort_keys=True)
    return [f"{sign}{indent}{label}:"] + [f"{sign}{indent}  {line}" for line in block.splitlines()]


def _field_lines(change: FieldChange) -> list[str]:
    a, b, indent = change.before, change.after, "    "
    if isinstance(a, str) and isinstance(b, str) and ("\n" in a or "\n" in b):
        body = difflib.unified_diff(a.splitlines(), b.splitlines(), n=2, lineterm="")
        return [f" {indent}{change.path}: (text)"] + [
            f"{line[0]}{indent}  {line[1:]}" for line in list(body)[2:] if not line.startswith("@@")
        ]
    out: list[str] = []
    if a is not MISSING:
        out += _value_lines("-", change.path, a, indent)
    if b is not MISSING:
        out += _value_lines("+", change.path, b, indent)
    return out


def _capped(lines: list[str]) -> list[str]:
    if len(lines) <= MAX_LINES_PER_OBJECT:
        return lines
    more = len(lines) - MAX_LINES_PER_OBJECT
    return [*lines[:MAX_LINES_PER_OBJECT], f"      ... {more} more lines"]


def change_lines(change: ObjectChange) -> list[str]:
    """One object's entry, diff-style: `+`/`-` lines for what is added or removed, so a
    ```diff block colours it."""
    if change.status == "changed":
        lines = [line for f in change.fields for line in _field_lines(f)]
        return [f"~ {change.key}", *_capped(lines)]
    sign, body = ("+", change.after) if change.status == "added" else ("-", change.before)
    text = yaml.safe_dump(body, sort_keys=False).splitlines()
    return [f"{sign} {change.key}", *_capped([f"{sign}   {line}" for line in text])]


def counts(changes: list[ObjectChange]) -> str:
    n = {s: sum(c.status == s for c in changes) for s in ("changed", "added", "removed")}
    return f"{n['changed']} changed, {n['added']} added, {n['removed']} removed"


def format_changes(changes: list[ObjectChange]) -> str:
    return "".join(line + "\n" for c in changes for line in change_lines(c))
