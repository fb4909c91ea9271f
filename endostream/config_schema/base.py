"""The building blocks of the config schema: a strict base model, text that also takes a bare
number from the command line (``source.uri=0``), the few bounded kinds, and ``describe``,
which words a type for an error line or ``--help``."""

from __future__ import annotations

import types
import typing
from typing import Annotated, Any, Literal, Union

import annotated_types
from pydantic import BaseModel, BeforeValidator, ConfigDict

from endostream.runtime.registry import BACKENDS

MISSING = "???"  # OmegaConf's mandatory value: the command stops with "missing value: key=..."


def _number_as_text(value: Any) -> Any:
    # Hydra parses `note=5` or `source.uri=0` as an int; for a text key that is still text.
    return str(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value


Text = Annotated[str, BeforeValidator(_number_as_text)]
Ratio = Annotated[float, annotated_types.Ge(0), annotated_types.Le(1)]
Quality = Annotated[int, annotated_types.Ge(0), annotated_types.Le(100)]
Port = Annotated[int, annotated_types.Ge(0), annotated_types.Le(65535)]
Count = Annotated[int, annotated_types.Ge(0)]
Backend = Literal[BACKENDS]  # the runtime registry's names, listed there once
Threads = Union[int, Literal["auto"]]


class Schema(BaseModel):
    """Strict: ``loop=maybe`` is not a boolean and ``frames=ten`` not an integer; an unknown key is
    refused (Hydra refuses it first, with "did you mean")."""

    model_config = ConfigDict(strict=True, extra="forbid")


_NAMES = {int: "an integer", float: "a number", bool: "true or false", str: "text",
          type(None): "null", Any: "anything"}


def _bounds(metadata: list[Any]) -> str:
    lo = next((m.ge for m in metadata if isinstance(m, annotated_types.Ge)), None)
    hi = next((m.le for m in metadata if isinstance(m, annotated_types.Le)), None)
    if lo is not None and hi is not None:
        return f" from {lo} to {hi}"
    if lo is not None:
        return f" of at least {lo}"
    return f" of at most {hi}" if hi is not None else ""


def describe(annotation: Any, metadata: list[Any] | None = None) -> str:
    """``Optional[int]`` -> "an integer or null"; ``Literal['live', 'lossless']`` -> "one of
    live, lossless"; a bounded float -> "a number from 0.0 to 1.0"."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Annotated:
        return describe(args[0], [*args[1:], *(metadata or [])])
    if origin in (Union, types.UnionType):
        parts = [describe(a) for a in args if a is not type(None)]
        return " or ".join(parts + (["null"] if type(None) in args else []))
    if origin is Literal:
        return "one of " + ", ".join(str(a) for a in args)
    if origin is list:
        size = next((m for m in metadata or [] if isinstance(m, annotated_types.Len)), None)
        count = f" of {size.min_length}" if size and size.min_length == size.max_length else ""
        return f"a list [a,b]{count}"
    if origin is dict or annotation is dict:
        return "a mapping {k: v}"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "a mapping {k: v}"
    if annotation in _NAMES:
        return _NAMES[annotation] + _bounds(list(metadata or []))
    for m in metadata or []:  # Text: str behind a BeforeValidator
        if isinstance(m, BeforeValidator):
            return "text"
    return getattr(annotation, "__name__", str(annotation))
