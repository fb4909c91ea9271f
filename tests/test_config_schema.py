"""Every setting has one type and one default, written once: a command's own keys in its schema
(endostream/config_schema/commands.py), a group's in its option file (configs/<group>/*.yaml,
typed by endostream/config_schema/groups.py). The YAML files keep only what differs."""

from __future__ import annotations

import pytest
import yaml
from omegaconf import OmegaConf

from endostream.cli import COMMANDS, compose, config_dir, config_problems
from endostream.config_help import defaults_of, schema_rows
from endostream.config_schema import SCHEMAS
from endostream.config_schema import groups as g


def _flat(data, prefix=""):
    out = {}
    for k, v in (data or {}).items():
        if isinstance(v, dict) and v:
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


@pytest.mark.parametrize("command", list(COMMANDS))
def test_a_command_file_starts_from_its_schema_and_repeats_none_of_it(command):
    path = config_dir() / f"{command}.yaml"
    data = yaml.safe_load(path.read_text())
    assert data["defaults"][0] == f"{command}_schema" and data["defaults"][-1] == "_self_"
    groups = {grp for grp, _ in defaults_of(path)}
    own = {key for key, value, _, _ in schema_rows(SCHEMAS[command]) if value}
    written = _flat({k: v for k, v in data.items() if k != "defaults"})
    for key, value in written.items():
        assert key not in own, f"configs/{command}.yaml repeats {key}, defined in the schema"
        group = key.split(".")[0]
        assert group in groups, f"configs/{command}.yaml: {key} is neither a group key nor the schema's"
        # a change to the group's value, never the same value a second time
        choice = dict(defaults_of(path))[group]
        option = yaml.safe_load((config_dir() / group / f"{choice}.yaml").read_text())
        assert _flat(option).get(key.split(".", 1)[1]) != value, f"{command}: {key} repeats {group}/{choice}"


def _group_files():
    # recipe/ and quality/ are presets (@package _global_): they set keys of other groups, typed there
    return sorted((p.parent.name, p.stem) for p in config_dir().glob("*/*.yaml")
                  if p.parent.name not in ("recipe", "quality"))


@pytest.mark.parametrize("group, option", _group_files())
def test_group_values_live_in_their_file_only(group, option):
    """A group schema holds types, no values: the option file is the one place of each value,
    and every key it writes has a type."""
    from endostream.config_help import group_types

    schema = {"sink": g.SINKS.get(option), "model": g.model_schema("onnx" if option == "onnx" else None)
              }.get(group, g.GROUPS.get(group))
    if group == "sink" and option == "none":
        return
    assert schema is not None, f"{group}/{option} has no schema"
    data = yaml.safe_load((config_dir() / group / f"{option}.yaml").read_text()) or {}
    written = {k for k in _flat(data) if not k.endswith("_target_")}
    typed = set(group_types(group, option))
    assert written <= typed, f"{group}/{option}: keys without a type: {written - typed}"
    for key, value, _, _ in schema_rows(schema):
        assert not (value and key in written), f"{group}/{option}: {key} has a default in the schema too"


CASES = [(c, []) for c in COMMANDS] + [
    ("consume", ["sink=[video,viewer,masks,republish,window]", "modality=laparoscopy"]),
    ("predict", ["model=onnx", "model.graph.path=x.onnx"]), ("batch", ["model=onnx", "model.graph.path=x.onnx"]),
    ("bench", ["source=clinicdb"]), ("produce", ["source=network", "source.uri=rtsp://x"]),
    ("produce", ["source=file", "source.uri=x.mp4"]), ("produce", ["source=device"]),
    ("produce", ["source=laparoscopy"]), ("train", ["+recipe=plain_baseline"])]


@pytest.mark.parametrize("command, overrides", CASES)
def test_shipped_defaults_fit_the_schema(command, overrides):
    mandatory = [f"{k}=x" for k in ("input", "output") if k in SCHEMAS[command].model_fields]
    cfg = compose(command, overrides + mandatory)
    assert config_problems(command, overrides + mandatory, cfg) == []
    assert OmegaConf.missing_keys(cfg) == set()
