"""The configs read for people: per-command help from the YAML files and their comments,
"did you mean" for unknown keys and options, type checks that name the key, and one line
per missing mandatory value. Used by :mod:`endostream.cli`; reads ``configs/`` as text (the
comments are the documentation), composes nothing itself.
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
    left = f"{' ' * indent}{key}: {value}"
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
            for k in (k for k in opt_keys if not k.key.endswith("_target_")):
                lines.append(_row(f"{group}.{k.key}", k.value, k.comment, 6))
    lines += ["", f"keys (configs/{command}.yaml):"]
    lines += [_row(k.key, k.value, k.comment, 2) for k in keys]
    if any(k.value == "???" for k in keys):
        lines += ["", "??? marks a value you must give."]
    return "\n".join(lines)


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


def known_types(config_dir: Path) -> dict[str, set[type]]:
    """Types each dotted key has anywhere in ``configs/`` (group files under their group's
    name), nulls left out: what ``model.steps=two`` is checked against."""
    types: dict[str, set[type]] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{prefix}{k}" if not prefix else f"{prefix}.{k}")
        elif node is not None and prefix:
            types.setdefault(prefix, set()).add(type(node))

    for path in config_dir.rglob("*.yaml"):
        try:
            data = _load(path.read_text())
        except yaml.YAMLError:
            continue
        if isinstance(data, dict):
            data.pop("defaults", None)
            rel = path.relative_to(config_dir)
            walk(data, ".".join(rel.parts[:-1]))
    return types


def comments_by_key(config_dir: Path, command: str) -> dict[str, str]:
    """Dotted key -> comment, from the command's file and every group file."""
    out = {k.key: k.comment for k in read_yaml_docs(config_dir / f"{command}.yaml")[1]}
    for path in config_dir.glob("*/*.yaml"):
        for k in read_yaml_docs(path)[1]:
            if not out.get(f"{path.parent.name}.{k.key}"):  # the group file documents the key
                out[f"{path.parent.name}.{k.key}"] = k.comment
    return out


_NAMES = {int: "an integer", float: "a number", bool: "true or false", str: "text",
          list: "a list [a,b]", dict: "a mapping {k: v}"}


def type_error(key: str, value: Any, expected: set[type], comment: str) -> str | None:
    """Why ``key=value`` has the wrong type, or None when it fits ``expected`` (a word the
    key's comment names, like ``auto`` in "int, or auto", always fits)."""
    from omegaconf import DictConfig, ListConfig

    if value is None or not expected or str in expected:
        return None
    if isinstance(value, ListConfig):
        value = list(value)
    if isinstance(value, DictConfig):
        value = dict(value)
    kind = type(value)
    fits = (kind in expected or (kind is int and float in expected)
            or (kind is float and int in expected and float(value).is_integer()))
    if fits or (isinstance(value, str) and re.search(rf"\b{re.escape(value)}\b", comment or "")):
        return None
    want = " or ".join(sorted(_NAMES.get(t, t.__name__) for t in expected))
    return f"{key}={value}: expected {want}" + (f" ({comment})" if comment else "")
