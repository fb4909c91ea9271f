"""The configs read for people: per-command help from the YAML files and their comments,
"did you mean" for unknown keys and options, type checks that name the key, and one line
per missing mandatory value. Used by :mod:`endostream.cli`; reads the command's schema
(endostream/config_schema: keys, types, defaults, what they mean) and ``configs/`` as text (the
group files' comments are their documentation), composes nothing itself.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: 10x faster, every command pays it


def _load(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a safe loader


@dataclass
class KeyDoc:
    """One key of a YAML file: dotted path, its value as written, and its comment."""

    key: str
    value: str
    comment: str


def _split_comment(text: str) -> tuple[str, str]:
    """``value  # comment`` -> (value, comment); a '#' inside quotes or brackets is kept."""
    depth, quote = 0, ""
    for i, ch in enumerate(text):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        elif ch == "#" and depth <= 0 and (i == 0 or text[i - 1] in " \t"):
            return text[:i].strip(), text[i + 1:].strip()
    return text.strip(), ""


_KEY = re.compile(r"^(\s*)([A-Za-z_][\w.\-]*)\s*:(.*)$")


def read_yaml_docs(path: Path) -> tuple[str, list[KeyDoc]]:
    """The file's header comment and its keys (dotted, nested mappings included) with their
    comments. A comment line indented past its key continues that key's comment; one at the
    key's own indentation documents the key that follows. The ``defaults`` list is left out."""
    header: list[str] = []
    docs: list[KeyDoc] = []
    stack: list[tuple[int, str]] = []  # (indent, key) of the open mappings
    pending: list[str] = []
    last: tuple[KeyDoc, int] | None = None
    in_defaults, seen_key = False, False
    for raw in path.read_text().splitlines():
        line = raw.rstrip()
        stripped = line.strip()
        if not stripped or stripped.startswith("# @package"):
            continue
        indent = len(line) - len(line.lstrip())
        if stripped.startswith("#"):
            text = stripped.lstrip("#").strip()
            if not seen_key:
                header.append(text)
            elif last is not None and indent > last[1] + 2:
                last[0].comment = f"{last[0].comment} {text}".strip()
            else:
                pending.append(text)
            continue
        if stripped.startswith("- "):
            continue  # list items (the defaults list, inline lists written as blocks)
        m = _KEY.match(line)
        if not m:
            continue
        seen_key = True
        key, rest = m.group(2), m.group(3)
        if indent == 0:
            in_defaults = key == "defaults"
        if in_defaults:
            pending = []
            continue
        while stack and stack[-1][0] >= indent:
            stack.pop()
        value, comment = _split_comment(rest)
        dotted = ".".join([k for _, k in stack] + [key])
        doc = KeyDoc(dotted, value, comment or " ".join(pending))
        pending = []
        if value:
            docs.append(doc)
        else:  # a mapping: its keys follow, indented
            stack.append((indent, key))
            if doc.comment:
                docs.append(doc)
        last = (doc, indent)
    return " ".join(header), docs


def defaults_of(path: Path) -> list[tuple[str, Any]]:
    """The ``defaults`` list of a top-level config: [(group, option or [options])]."""
    data = _load(path.read_text()) or {}
    out = []
    for item in data.get("defaults") or []:
        if isinstance(item, dict):
            for group, choice in item.items():
                out.append((str(group), choice))
    return out


def group_options(config_dir: Path, group: str) -> list[str]:
    return sorted(p.stem for p in (config_dir / group).glob("*.yaml"))


def _row(key: str, value: str, comment: str, indent: int) -> str:
    left = f"{' ' * indent}{key}: {value}".rstrip()
    return f"{left:<42}  # {comment}" if comment else left


def command_help(config_dir: Path, command: str, purpose: str, examples: list[str]) -> str:
    """``endostream <command> --help``: purpose, usage, groups and keys with their comments."""
    path = config_dir / f"{command}.yaml"
    header, keys = read_yaml_docs(path)
    lines = [f"endostream {command}: {purpose}", "",
             f"usage: endostream {command} [key=value ...] [group=option ...]", "", "examples:"]
    lines += [f"  {e}" for e in examples]
    groups = defaults_of(path)
    groups = [(g, c) for g, c in groups if g != "_self_"]
    if groups:
        lines += ["", f"config groups (configs/<group>/<option>.yaml; choose with group=option; "
                      f"change a key with group.key=value):"]
    for group, choice in groups:
        options = group_options(config_dir, group)
        if isinstance(choice, list):
            lines.append(f"  {group}=[{','.join(map(str, choice))}]   a list: any of {', '.join(options)}; "
                         f"{group}=[] for none")
            shown = options  # every option's keys: sink.viewer.port applies once it is listed
        else:
            lines.append(f"  {group}={choice}   options: {', '.join(options)}")
            shown = [str(choice)]
        for option in options:
            opt_header, opt_keys = read_yaml_docs(config_dir / group / f"{option}.yaml")
            if option not in shown:
                lines.append(f"    {option}: {opt_header}")
                continue
            lines.append(f"    {option}: {opt_header}" if isinstance(choice, list) or opt_header
                         else f"    {option}:")
            kinds = group_types(group, option)
            for k in (k for k in opt_keys if not k.key.endswith("_target_")):
                kind = kinds.get(k.key, "")
                text = f"[{kind}] {k.comment}".strip() if kind else k.comment
                lines.append(_row(f"{group}.{k.key}", k.value, text, 6))
    from endostream.config_schema import SCHEMAS

    rows = schema_rows(SCHEMAS[command])
    lines += ["", "keys (type, default; endostream/config_schema/commands.py):"]
    lines += [_row(key, value, f"[{kind}] {text}" if kind else text, 2) for key, value, kind, text in rows]
    if keys:
        lines += ["", f"set in the groups by configs/{command}.yaml:"]
        lines += [_row(k.key, k.value, k.comment, 2) for k in keys]
    if any(value == "???" for _, value, _, _ in rows):
        lines += ["", "??? marks a value you must give."]
    return "\n".join(lines)


def group_types(group: str, option: str) -> dict[str, str]:
    """Key inside a group option's file -> its type in words, from the groups' schema."""
    from endostream.config_schema import groups as g

    if group == "sink":
        schema, prefix = g.SINKS.get(option), f"{option}."
    elif group == "model":
        schema, prefix = g.model_schema("onnx" if option == "onnx" else None), ""
    else:
        schema, prefix = g.GROUPS.get(group), ""
    return {prefix + key: kind for key, _, kind, _ in schema_rows(schema)} if schema else {}


def _yaml_value(value: Any) -> str:
    """A default as it is written on the command line: null, true, [video], out/bench."""
    if isinstance(value, str):
        return value if value else '""'
    return yaml.safe_dump(value, default_flow_style=True, width=1000).strip().removesuffix("...").strip()


def schema_rows(schema: Any, prefix: str = "") -> list[tuple[str, str, str, str]]:
    """(dotted key, default, type in words, what it means) for every key of a schema; a block of
    keys is one row with its meaning followed by a row per key inside it."""
    from pydantic import BaseModel

    from endostream.config_schema.base import describe

    rows = []
    defaults = schema.model_construct().model_dump()  # group schemas have none: .get below
    for name, field in schema.model_fields.items():
        key = f"{prefix}{name}"
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            rows.append((key, "", "", field.description or ""))
            inner = schema_rows(annotation, key + ".")
            if not field.is_required():  # this schema's default for the block (demo's threads: auto)
                values = defaults.get(name) if isinstance(defaults.get(name), dict) else {}
                inner = [(k, _yaml_value(_get(values, k[len(key) + 1:])), t, d) for k, _, t, d in inner]
            rows += inner
            continue
        value = "" if field.is_required() else _yaml_value(defaults.get(name))  # groups: no defaults
        rows.append((key, value, describe(annotation, list(field.metadata)),
                     field.description or ""))
    return rows


def _get(values: dict[str, Any], dotted: str) -> Any:
    for part in dotted.split("."):
        values = values.get(part) if isinstance(values, dict) else None
    return values


# --------------------------------------------------------------------------- errors


def flat_keys(cfg: Any, prefix: str = "") -> list[str]:
    """Every dotted key of a composed config (mappings included)."""
    from omegaconf import DictConfig

    out = []
    for k in cfg.keys() if isinstance(cfg, DictConfig) else []:
        key = f"{prefix}{k}"
        out.append(key)
        try:
            child = cfg._get_node(k)
        except Exception:  # noqa: BLE001 - a node that cannot be read is still a key
            continue
        if isinstance(child, DictConfig):
            out += flat_keys(child, key + ".")
    return out


def did_you_mean(word: str, candidates: list[str]) -> list[str]:
    """Close matches of ``word``: on the whole dotted key and on its last part."""
    candidates = [c for c in candidates if not word.startswith(c + ".")]  # not its own parent
    close = difflib.get_close_matches(word, candidates, n=2, cutoff=0.6)
    last = word.rsplit(".", 1)[-1]
    by_last = {c.rsplit(".", 1)[-1]: c for c in candidates}
    for m in difflib.get_close_matches(last, list(by_last), n=3, cutoff=0.75):
        if by_last[m] not in close:
            close.append(by_last[m])
    return close[:2]


def comments_by_key(config_dir: Path, command: str) -> dict[str, str]:
    """Dotted key -> what it means: the command's schema, its file, then every group file."""
    from endostream.config_schema import SCHEMAS

    out = {key: text for key, _, _, text in schema_rows(SCHEMAS[command])}
    out.update({k.key: k.comment for k in read_yaml_docs(config_dir / f"{command}.yaml")[1] if k.comment})
    for path in config_dir.glob("*/*.yaml"):
        for k in read_yaml_docs(path)[1]:
            if not out.get(f"{path.parent.name}.{k.key}"):  # the group file documents the key
                out[f"{path.parent.name}.{k.key}"] = k.comment
    return out
