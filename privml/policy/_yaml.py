"""Policies as code: the YAML form of a vault's principals, purposes and grants.

Parsing keeps every node's line, so a bad document fails with the line and
the field at fault (``line 14, grants[2].mode: unknown mode 'rw'``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from ..exceptions import ConfigurationError
from ._grants import RECORD_FIELDS, shape

__all__ = ["PolicyDocument", "dump", "parse"]

_GRANT_KEYS = {"id", *RECORD_FIELDS, "categories"}  # the old name of tags: shape() says so


@dataclass(frozen=True)
class PolicyDocument:
    """A parsed policy: plain values, validated for shape (not yet against the vault)."""

    principals: dict[str, dict[str, Any]]
    purposes: dict[str, dict[str, Any]]
    grants: list[dict[str, Any]]
    lines: dict[str, int]  # field path -> line, for later error messages


class _Reader:
    def __init__(self) -> None:
        self._constructor = yaml.SafeLoader("")
        self.lines: dict[str, int] = {}

    def fail(self, node: yaml.Node, path: str, problem: str) -> ConfigurationError:
        return ConfigurationError(f"policy YAML line {node.start_mark.line + 1}, {path}: {problem}")

    def value(self, node: yaml.Node, path: str) -> Any:
        self.lines[path] = node.start_mark.line + 1
        return self._constructor.construct_object(node, deep=True)

    def mapping(self, node: yaml.Node, path: str) -> list[tuple[str, yaml.Node]]:
        if not isinstance(node, yaml.MappingNode):
            raise self.fail(node, path, "expected a mapping (key: value lines)")
        self.lines[path] = node.start_mark.line + 1
        out = []
        for key_node, value_node in node.value:
            key = self.value(key_node, f"{path}.<key>")
            if not isinstance(key, str):
                raise self.fail(key_node, path, f"keys must be strings, got {key!r}")
            out.append((key, value_node))
        return out

    def sequence(self, node: yaml.Node, path: str) -> list[yaml.Node]:
        if not isinstance(node, yaml.SequenceNode):
            raise self.fail(node, path, "expected a list (lines starting with '- ')")
        return list(node.value)


def parse(text: str) -> PolicyDocument:
    """Parse and check a policy document on its own (not yet against the vault).

    Each grant is checked with :func:`privml.policy._grants.shape` and each
    purpose's parent must be a purpose of the document; errors name the line
    and the field.
    """
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = f"line {mark.line + 1}: " if mark is not None else ""
        raise ConfigurationError(f"policy YAML {line}not valid YAML: {err}") from None
    if root is None:
        raise ConfigurationError("policy YAML is empty")
    reader = _Reader()
    top = dict(reader.mapping(root, "policy"))
    unknown = set(top) - {"version", "principals", "purposes", "grants"}
    if unknown:
        key = sorted(unknown)[0]
        raise reader.fail(
            top[key], f"policy.{key}", "unknown section; expected principals, purposes, grants"
        )
    principals: dict[str, dict[str, Any]] = {}
    for name, node in (
        reader.mapping(top["principals"], "principals") if "principals" in top else []
    ):
        path = f"principals.{name}"
        item = _fields(reader, node, path, allowed={"roles", "attributes"}, required=set())
        roles = item.get("roles", [])
        if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
            raise reader.fail(node, f"{path}.roles", "expected a list of role names")
        attributes = item.get("attributes", {})
        if not isinstance(attributes, Mapping):
            raise reader.fail(node, f"{path}.attributes", "expected a mapping")
        principals[name] = {"roles": roles, "attributes": dict(attributes)}
    purposes: dict[str, dict[str, Any]] = {}
    for name, node in reader.mapping(top["purposes"], "purposes") if "purposes" in top else []:
        path = f"purposes.{name}"
        item = _fields(
            reader,
            node,
            path,
            allowed={"description", "lawful_basis", "parent"},
            required={"description", "lawful_basis"},
        )
        purposes[name] = item
    grants: list[dict[str, Any]] = []
    for i, node in enumerate(reader.sequence(top["grants"], "grants") if "grants" in top else []):
        path = f"grants[{i}]"
        item = _fields(
            reader, node, path, allowed=_GRANT_KEYS, required={"dataset", "purpose", "mode"}
        )
        try:
            shape(item)
        except ConfigurationError as err:
            field = getattr(err, "field", None)
            if field is not None and f"{path}.{field}" in reader.lines:
                at = reader.lines[f"{path}.{field}"]
                raise ConfigurationError(f"policy YAML line {at}, {path}.{field}: {err}") from None
            raise reader.fail(node, path, str(err)) from None
        grants.append(item)
    _check_parents(reader, purposes)
    return PolicyDocument(principals, purposes, grants, reader.lines)


def _check_parents(reader: _Reader, purposes: Mapping[str, Mapping[str, Any]]) -> None:
    for name, item in purposes.items():
        parent = item.get("parent")
        if parent is not None and parent not in purposes:
            path = f"purposes.{name}.parent"
            raise ConfigurationError(
                f"policy YAML line {reader.lines.get(path, 0)}, {path}: unknown purpose {parent!r}"
            )


def _fields(
    reader: _Reader, node: yaml.Node, path: str, *, allowed: set[str], required: set[str]
) -> dict[str, Any]:
    pairs = reader.mapping(node, path)
    out: dict[str, Any] = {}
    for key, value_node in pairs:
        if key not in allowed:
            raise reader.fail(
                value_node, f"{path}.{key}", f"unknown field; allowed fields are {sorted(allowed)}"
            )
        out[key] = reader.value(value_node, f"{path}.{key}")
    missing = required - set(out)
    if missing:
        raise reader.fail(node, path, f"missing field(s) {sorted(missing)}")
    return out


def dump(
    *,
    version: int,
    principals: Mapping[str, Mapping[str, Any]],
    purposes: Mapping[str, Mapping[str, Any]],
    grants: list[dict[str, Any]],
) -> str:
    """Write a policy document (the inverse of :func:`parse`)."""
    document = {
        "version": version,
        "principals": {k: dict(v) for k, v in principals.items()},
        "purposes": {k: dict(v) for k, v in purposes.items()},
        "grants": grants,
    }
    header = "# privml access policy. Load with vault.policy.load_yaml(text).\n"
    return header + yaml.safe_dump(document, sort_keys=False, allow_unicode=True)
