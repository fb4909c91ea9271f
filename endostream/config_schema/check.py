"""Schema -> Hydra (the defaults each command's YAML starts from) and composed config -> schema
(one line per wrong value, naming the key, the value and what is expected)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from endostream.config_schema import commands as c
from endostream.config_schema import groups as g
from endostream.config_schema.base import MISSING, Schema, describe

SCHEMAS: dict[str, type[Schema]] = {
    "demo": c.DemoConfig, "produce": c.ProduceConfig, "consume": c.ConsumeConfig,
    "keys": c.KeysConfig, "train": c.TrainConfig, "eval": c.EvalConfig,
    "predict": c.PredictConfig, "export": c.ExportConfig, "bench": c.BenchConfig,
    "batch": c.BatchConfig,
}

_registered = False


def defaults_of_schema(schema: type[Schema]) -> dict[str, Any]:
    """The schema's defaults as plain data (``???`` where a value must be given)."""
    return schema.model_construct().model_dump()


def register() -> None:
    """Store ``<command>_schema`` in Hydra's ConfigStore (once per process)."""
    global _registered
    if _registered:
        return
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    for command, schema in SCHEMAS.items():
        store.store(name=f"{command}_schema", node=defaults_of_schema(schema))
    _registered = True


def _group_models(cfg: Any, groups: list[str]) -> dict[str, Any]:
    """The groups a command's YAML selects -> (their typed models, their values)."""
    out: dict[str, Any] = {}
    for group in groups:
        value = cfg.get(group)
        if group == "sink":
            for name, entry in (value or {}).items():
                schema = g.SINKS.get(name)
                if schema is not None and isinstance(entry, dict):
                    out[f"sink.{name}"] = (schema, {k: v for k, v in entry.items() if k != "_target_"})
        elif group == "model":
            out["model"] = (g.model_schema((value or {}).get("kind")), value)
        elif group in g.GROUPS:
            out[group] = (g.GROUPS[group], value)
    return out


def field_at(schema: type[BaseModel], loc: tuple[Any, ...]) -> tuple[FieldInfo | None, list[str]]:
    """The schema field a validation error's location points to, and the key names leading to
    it (a union's member tags and list indices past the field are dropped)."""
    field: FieldInfo | None = None
    names: list[str] = []
    current: Any = schema
    for part in loc:
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            break
        if part not in current.model_fields:
            break
        field = current.model_fields[part]
        names.append(str(part))
        current = _model_inside(field.annotation)
    return field, names


def _model_inside(annotation: Any) -> Any:
    import typing

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_inside(arg)
        if found is not None:
            return found
    return None


def _show(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def _line(key: str, field: FieldInfo | None, err: dict[str, Any], value: Any, comment: str) -> str:
    if err["type"] == "missing":
        return f"{key}: missing (its config file must set it)"
    if err["type"] == "extra_forbidden":
        return f"unknown key '{key}'"
    want = describe(field.annotation, list(field.metadata)) if field is not None else err["msg"]
    return f"{key}={_show(value)}: expected {want}" + (f" ({comment})" if comment else "")


def _value_at(data: Any, names: list[str]) -> Any:
    for name in names:
        data = data.get(name) if isinstance(data, dict) else None
    return data


def problems(command: str, cfg: Any, groups: list[str],
             comment: Callable[[str], str] = lambda key: "") -> list[str]:
    """One line per wrong value of a composed config (plain data, interpolations resolved):
    the command's own keys against its schema, each selected group against its own."""
    data = dict(cfg)
    own = {k: v for k, v in data.items() if k not in groups}
    checks: list[tuple[str, type[Schema], Any]] = [("", SCHEMAS[command], own)]
    checks += [(name, schema, value) for name, (schema, value) in _group_models(data, groups).items()]
    lines: list[str] = []
    seen: set[str] = set()
    for prefix, schema, value in checks:
        if value is None or value == MISSING:
            continue
        try:
            schema.model_validate(value)
        except ValidationError as exc:
            for err in exc.errors():
                if err.get("input") == MISSING:
                    continue  # reported as a missing value by the caller
                field, names = field_at(schema, err["loc"])
                if err["type"] in ("missing", "extra_forbidden"):
                    names = [str(p) for p in err["loc"]]
                key = ".".join([prefix, *names] if prefix else names)
                if key not in seen:  # a union reports once per member: one line per key
                    seen.add(key)
                    lines.append(_line(key, field, err, _value_at(value, names), comment(key)))
    return lines
