"""The typed configuration: each command's own keys with their one default (``commands``), the
config groups' keys typed (``groups``), registered with Hydra's ConfigStore so that every
``configs/<command>.yaml`` starts from ``<command>_schema``, and checked after composition and
before anything starts (``check``)."""

from endostream.config_schema.check import SCHEMAS, defaults_of_schema, field_at, problems, register

__all__ = ["SCHEMAS", "defaults_of_schema", "field_at", "problems", "register"]
