"""``bench compare.variants``: each variant is the bench config with its overrides merged in, so
it is checked against the same schema as the command line (a typo in a variant is one line
before anything runs, not a crash halfway through a comparison)."""

from __future__ import annotations

from typing import Any


def variant_config(cfg: Any, overrides: Any) -> Any:
    """A variant is a mapping merged into the config ({model: {steps: 1}}, easy to write on a
    command line) or a list of "key=value" strings (easy in a YAML file)."""
    from omegaconf import OmegaConf

    if OmegaConf.is_dict(overrides) or isinstance(overrides, dict):
        patch = OmegaConf.create(OmegaConf.to_container(overrides) if OmegaConf.is_dict(overrides) else overrides)
    else:
        patch = OmegaConf.from_dotlist([str(o) for o in overrides or []])
    base = OmegaConf.create(OmegaConf.to_container(cfg))  # not struct: an unknown key reaches the schema check
    c = OmegaConf.merge(base, patch)
    OmegaConf.set_struct(c, False)
    return c
