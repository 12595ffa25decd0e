"""Write `config/README.md`, the reference of every configuration key, from `config/schema.yaml`.

    python -m toolshift.common.config_doc > config/README.md      # regenerate after a schema change
    python -m toolshift.common.config_doc --check                  # exit 1 when the committed file is stale

The schema is the one source: each key's path, type (with its allowed values and bounds), default and
description are read from it, so the reference cannot drift from what
`toolshift.common.config.validate_config` accepts (`tests/test_docs.py` compares the committed file with this
output).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from collections.abc import Iterator, Mapping
from typing import Any

from toolshift.common.config import REPO_ROOT, SCHEMA_PATH, load_schema

README_PATH = REPO_ROOT / "config" / "README.md"
COMMAND = "python -m toolshift.common.config_doc > config/README.md"

INTRO = """\
`config/config.yaml` is the embedded default (`make report` runs it) and `config/paper.yaml` the paper's
full study; `config/schema.yaml` defines every key below, its type and its default. The Snakefile
validates the config against the schema before the DAG is built, filling in the defaults: an unknown key,
a wrong type or an unknown condition, family or dataset stops the run with one line naming it, before any
job starts. A `--configfile` **replaces** the embedded default instead of being merged into it, so the
config you give lists exactly the models and datasets that run.

In the key paths, `<name>` stands for a name you choose (a dataset of the registry, a model's name) and
`<api>` / `<judge model>` for the shared entries at the end. `—` means no default: the key is optional
unless it is marked *required*.
"""


def _code(value: Any) -> str:
    if isinstance(value, str):
        return f"`{value}`"
    return f"`{json.dumps(value)}`"


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


class _Doc:
    def __init__(self, schema: Mapping[str, Any]):
        self.schema = schema
        self.defs: Mapping[str, Any] = schema.get("$defs", {})
        refs = Counter(_refs(schema))
        # Object definitions used in more than one place get one section of their own.
        self.shared = {
            name: label
            for name, label in (("api", "<api>"), ("judge_model", "<judge model>"))
            if refs[name] > 1 and name in self.defs
        }
        for name, count in refs.items():
            if count > 1 and self.defs.get(name, {}).get("properties") and name not in self.shared:
                self.shared[name] = f"<{name}>"

    def resolve(self, node: Mapping[str, Any]) -> tuple[Mapping[str, Any], str | None]:
        ref = node.get("$ref")
        if ref is None:
            return node, None
        name = ref.rsplit("/", 1)[-1]
        merged = {**self.defs[name], **{k: v for k, v in node.items() if k != "$ref"}}
        return merged, name

    def type_of(self, node: Mapping[str, Any]) -> str:
        node, name = self.resolve(node)
        if name in self.shared:
            return f"[`{self.shared[name]}`](#{_anchor(self.shared[name])}) entry"
        parts: list[str] = []
        if "const" in node:
            parts.append(_code(node["const"]))
        elif "enum" in node:
            parts.append("one of " + ", ".join(_code(v) for v in node["enum"]))
        elif "oneOf" in node or "anyOf" in node:
            parts.append(" or ".join(self.type_of(alt) for alt in node.get("oneOf", node.get("anyOf"))))
        elif "type" in node:
            types = node["type"] if isinstance(node["type"], list) else [node["type"]]
            words = []
            for t in types:
                if t == "array" and "items" in node:
                    words.append(f"list of ({self.type_of(node['items'])})")
                elif t == "object" and isinstance(node.get("additionalProperties"), dict):
                    key = "name"
                    if "pattern" in node.get("propertyNames", {}):
                        key = f"name matching `{node['propertyNames']['pattern']}`"
                    words.append(f"mapping {key} → ({self.type_of(node['additionalProperties'])})")
                elif t == "string" and "pattern" in node:
                    words.append(f"string matching `{node['pattern']}`")
                else:
                    words.append(t)
            parts.append(" or ".join(words))
        parts.extend(_bounds(node))
        if "contains" in node or "allOf" in node:
            musts = [
                s["contains"]["const"] for s in node.get("allOf", []) if "const" in s.get("contains", {})
            ]
            if musts:
                parts.append("must contain " + ", ".join(_code(m) for m in musts))
        return ", ".join(p for p in parts if p) or "any"

    def rows(self, node: Mapping[str, Any], path: str, required: bool = False) -> Iterator[list[str]]:
        """One row for `node` at `path`, then rows for every key below it."""
        kind = self.type_of(node) + (", *required*" if required else "")
        node, name = self.resolve(node)
        default = _code(node["default"]) if "default" in node else "—"
        description = _cell(node.get("description", ""))
        for rule in _conditional_requirements(node):
            description = f"{description} {rule}".strip()
        yield [f"`{path}`", _cell(kind), _cell(default), description]
        if name in self.shared:
            return
        yield from self.children(node, path)

    def children(self, node: Mapping[str, Any], path: str) -> Iterator[list[str]]:
        required = set(node.get("required", []))
        for key, child in node.get("properties", {}).items():
            yield from self.rows(child, f"{path}.{key}" if path else key, key in required)
        extra = node.get("additionalProperties")
        if isinstance(extra, dict):
            yield from self.children(self.resolve(extra)[0], f"{path}.<name>")
        for alt in node.get("oneOf", []) + node.get("anyOf", []):
            yield from self.children(self.resolve(alt)[0], path)
        if isinstance(node.get("items"), dict):
            yield from self.children(self.resolve(node["items"])[0], f"{path}[]")


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        if isinstance(node.get("$ref"), str):
            yield node["$ref"].rsplit("/", 1)[-1]
        for value in node.values():
            yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def _bounds(node: Mapping[str, Any]) -> list[str]:
    words = []
    for key, sign in (
        ("minimum", "≥"),
        ("exclusiveMinimum", ">"),
        ("maximum", "≤"),
        ("exclusiveMaximum", "<"),
    ):
        if key in node:
            words.append(f"{sign} {node[key]}")
    if node.get("minLength") == 1:
        words.append("non-empty")
    if "minItems" in node:
        words.append(f"at least {node['minItems']} item{'s' if node['minItems'] != 1 else ''}")
    if "maxItems" in node:
        words.append(f"at most {node['maxItems']} items")
    if "minProperties" in node:
        words.append(f"at least {node['minProperties']} entry")
    if node.get("uniqueItems"):
        words.append("no repeats")
    return words


def _conditional_requirements(node: Mapping[str, Any]) -> list[str]:
    """The `allOf: [{if: {properties: {k: {const: v}}}, then: {required: [...]}, else: ...}]` rules."""
    rules = []
    for clause in node.get("allOf", []):
        condition = clause.get("if", {}).get("properties", {})
        if not condition or not all("const" in c for c in condition.values()):
            continue
        when = " and ".join(f"`{k}: {v['const']}`" for k, v in condition.items())
        then = clause.get("then", {}).get("required")
        otherwise = clause.get("else", {}).get("required")
        if then:
            rules.append(f"With {when}, {_names(then)} required.")
        if otherwise:
            rules.append(f"Otherwise {_names(otherwise)} required.")
    return rules


def _names(keys: list[str]) -> str:
    listed = " and ".join(", ".join(f"`{k}`" for k in keys).rsplit(", ", 1))
    return f"{listed} {'is' if len(keys) == 1 else 'are'}"


def _anchor(title: str) -> str:
    """GitHub's heading anchor: lower case, punctuation dropped, spaces to hyphens."""
    kept = "".join(c for c in title.lower() if c.isalnum() or c in " -_")
    return kept.replace(" ", "-")


def _table(rows: list[list[str]]) -> list[str]:
    lines = ["| key | type | default | description |", "|---|---|---|---|"]
    lines.extend("| " + " | ".join(row) + " |" for row in rows)
    return lines


def render(schema: Mapping[str, Any] | None = None) -> str:
    """The Markdown reference of every key of `schema` (default: `config/schema.yaml`)."""
    schema = load_schema(SCHEMA_PATH) if schema is None else schema
    doc = _Doc(schema)
    required = set(schema.get("required", []))
    lines = [
        "# Configuration reference",
        "",
        f"<!-- Generated from config/schema.yaml by `{COMMAND}`; do not edit by hand. -->",
        "",
        INTRO,
    ]
    description = _cell(schema.get("description", ""))
    if description:
        lines += [description, ""]
    lines += ["## Top-level keys", ""]
    top = []
    for key, child in schema.get("properties", {}).items():
        row = next(doc.rows(child, key, key in required))
        resolved, _ = doc.resolve(child)
        if list(doc.children(resolved, key)):
            row[3] = f"{row[3]} See [`{key}`](#{_anchor(key)}).".strip()
        top.append(row)
    lines += _table(top) + [""]
    for key, child in schema.get("properties", {}).items():
        resolved, _ = doc.resolve(child)
        rows = list(doc.children(resolved, key))
        if rows:
            lines += [f"## `{key}`", ""] + _table(rows) + [""]
            entry = resolved.get("additionalProperties")
            rules = _conditional_requirements(doc.resolve(entry)[0]) if isinstance(entry, dict) else []
            if rules:
                lines += [f"In each `{key}.<name>` entry: " + " ".join(rules), ""]
    for name, label in doc.shared.items():
        definition = doc.defs[name]
        lines += [f"## `{label}`", ""]
        if definition.get("description"):
            lines += [_cell(definition["description"]), ""]
        rows = list(doc.children(definition, label))
        rules = _conditional_requirements(definition)
        lines += _table(rows) + [""]
        if rules:
            lines += [" ".join(rules), ""]
    return "\n".join(lines).rstrip("\n") + "\n"


def key_paths(schema: Mapping[str, Any] | None = None) -> list[str]:
    """Every key path the reference documents (`models.<name>.family`, `<api>.base_url`, ...)."""
    schema = load_schema(SCHEMA_PATH) if schema is None else schema
    doc = _Doc(schema)
    paths = [row[0].strip("`") for row in doc.children(schema, "")]
    for name, label in doc.shared.items():
        paths += [row[0].strip("`") for row in doc.children(doc.defs[name], label)]
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m toolshift.common.config_doc", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--check", action="store_true", help=f"compare with {README_PATH.name}, exit 1 if stale"
    )
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = README_PATH.read_text(encoding="utf-8") if README_PATH.is_file() else ""
        if current != text:
            print(f"{README_PATH} is stale: run `{COMMAND}`", file=sys.stderr)
            return 1
        return 0
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
