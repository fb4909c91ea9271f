"""`endostream <command> [hydra overrides...]`.

Each command has one top-level Hydra config (``configs/<command>.yaml``) and one function
``run(cfg) -> int``. The config is composed with Hydra's compose API, so the working
directory never changes and relative paths resolve against the folder the command runs in.
"""

from __future__ import annotations

import difflib
import importlib
import os
import re
import sys
from pathlib import Path

# command -> "module:function"; modules are imported only when their command runs, so a
# machine without torch (or TensorRT, or Ray) can still use the commands that need none.
COMMANDS: dict[str, str] = {
    "demo": "endostream.demo:run",
    "produce": "endostream.capture.producer:run",
    "consume": "endostream.consumer.app:run",
    "keys": "endostream.protocol.security:run_keys",
    "train": "endostream.training.train:run",
    "eval": "endostream.training.evaluate:run",
    "predict": "endostream.inference.predict:run",
    "export": "endostream.runtime.export:run",
    "bench": "endostream.bench.run:run",
    "batch": "endostream.batch.run:run",
}

# command -> "module:function" run on the composed config before the command's own module is
# imported: cheap checks (a taken port) that must fail in a second, not after the model loads.
PREFLIGHT: dict[str, str] = {
    "consume": "endostream.consumer.ports:check",
    "demo": "endostream.consumer.ports:check",
}


def config_dir() -> Path:
    """The ``configs/`` folder: ``$ENDOSTREAM_CONFIGS`` or the one beside the package."""
    env = os.environ.get("ENDOSTREAM_CONFIGS")
    return Path(env) if env else Path(__file__).resolve().parent.parent / "configs"


def compose(command: str, overrides: list[str] | None = None):
    """Compose ``configs/<command>.yaml`` with overrides; never touches the working dir."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from endostream.config_schema import register

    register()  # the <command>_schema each configs/<command>.yaml starts from
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return hydra_compose(config_name=command, overrides=list(overrides or []))


# command -> (purpose, examples) for ``endostream <command> --help``; the keys come from the YAML.
HELP: dict[str, tuple[str, list[str]]] = {
    "demo": ("the bundled clip through producer and consumer on loopback (live, shipped weights) "
             "-> out/demo/overlay.mp4 and out/demo/summary.json",
             ["endostream demo", "endostream demo max_frames=50 out=/tmp/demo sink=[video,viewer]"]),
    "produce": ("stream a video file, camera, network stream or image folder to a consumer over ZeroMQ",
                ["endostream produce source.uri=assets/demo/clinicdb_demo.mp4 loop=true",
                 "endostream produce source=laparoscopy transport.mode=lossless pace=fast"]),
    "consume": ("receive frames, segment polyps, draw the overlay and hand it to the sinks "
                "(overlay video, browser viewer, mask PNGs...)",
                ["endostream consume sink=[video,viewer]      # viewer on http://127.0.0.1:8090/",
                 "endostream consume transport.mode=lossless out=out/run1 sink=[video,masks]",
                 "endostream consume sink=[viewer] sink.viewer.port=8091 "
                 "transport.endpoint=tcp://127.0.0.1:5565"]),
    "keys": ("create or list CURVE key pairs; allow a producer's public key on the consumer",
             ["endostream keys action=create name=server dir=keys",
              "endostream keys action=allow path=keys/client.key dir=keys"]),
    "train": ("train the segmenter on the data under ../shared/data",
              ["endostream train train.budget_minutes=30 train.out=runs/try"]),
    "eval": ("Dice and flicker of the weights on the validation split, or on a folder of images and masks",
             ["endostream eval", "endostream eval images=DIR masks=DIR sequence=true"]),
    "predict": ("one 0/255 mask PNG per image, at its size (a folder of images or one image file)",
                ["endostream predict input=frames/ output=out/masks",
                 "endostream predict input=frame.png output=out/masks"]),
    "export": ("ONNX graphs (encode + denoise) and their sidecar, beside the weights",
               ["endostream export weights=weights/polyp.pt",
                "endostream export single_pass=true out=out/k0   # the K=0 pass as one graph + contract (model=onnx)"]),
    "bench": ("latency benchmark of the real pipeline (docs/BENCH.md)",
              ["endostream bench scenario=pipeline frames=300 out=out/bench",
               "endostream bench scenario=model model.backend=onnxruntime model.steps=1"]),
    "batch": ("segment recorded videos offline: every frame, resumable, local pool or Ray (docs/BATCH.md)",
              ["endostream batch input=videos/ output=out/batch"]),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    rows = [f"  {c:<{width}}  {HELP[c][0]}" for c in COMMANDS]
    return ("usage: endostream <command> [key=value ...]\n\ncommands:\n" + "\n".join(rows)
            + "\n\nendostream <command> --help lists its config groups and keys.")


def config_problems(command: str, overrides: list[str], cfg) -> list[str]:
    """One line per value that does not fit the schema (``max_frames=abc``, ``loop=maybe``,
    ``executor=dask``), naming the key, the value and what is expected, and one per missing
    mandatory value (``???``: ``output=``). Checked before anything is imported or bound."""
    from omegaconf import OmegaConf

    from endostream import config_help as ch
    from endostream.config_schema import problems as schema_problems

    comments: dict[str, str] = {}

    def comment(key: str) -> str:  # read only when there is something to explain
        if not comments:
            comments.update(ch.comments_by_key(config_dir(), command))
        return comments.get(key, "")

    missing = sorted(OmegaConf.missing_keys(cfg))
    groups = [g for g, _ in ch.defaults_of(config_dir() / f"{command}.yaml")]
    try:
        data = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    except Exception:  # noqa: BLE001 - an interpolation of a missing value: reported below
        data = OmegaConf.to_container(cfg, resolve=False, throw_on_missing=False)
    problems = schema_problems(command, data, groups, comment)
    for key in missing:
        problems.append(f"missing value: {key}=..." + (f" ({comment(key)})" if comment(key) else ""))
    if command == "bench":
        problems += _variant_problems(cfg, groups, set(problems))
    return problems


def _variant_problems(cfg, groups: list[str], known: set[str]) -> list[str]:
    """``compare.variants``: each variant's merged config against the bench schema; only what
    the variant itself gets wrong (the base config's problems are reported once, above)."""
    from omegaconf import OmegaConf

    from endostream.config_schema import problems as schema_problems
    from endostream.config_schema.variants import variant_config

    lines: list[str] = []
    for name, overrides in (OmegaConf.select(cfg, "compare.variants") or {}).items():
        try:
            data = OmegaConf.to_container(variant_config(cfg, overrides), resolve=True, throw_on_missing=False)
        except Exception as exc:  # noqa: BLE001 - a malformed override list
            lines.append(f"compare.variants.{name}: {str(exc).splitlines()[0]}")
            continue
        lines += [f"compare.variants.{name}: {p}" for p in schema_problems("bench", data, groups) if p not in known]
    return lines


def explain_compose_error(command: str, overrides: list[str], exc: Exception) -> str:
    """A Hydra composition error as one line, with "did you mean" where it can guess."""
    from endostream import config_help as ch

    text = str(exc)
    m = re.search(r"Could not override '([^']+)'|Key '([^']+)' is not in struct", text)
    if m:
        key = m.group(1) or m.group(2)
        parts = key.split(".")
        groups = dict(ch.defaults_of(config_dir() / f"{command}.yaml"))
        if len(parts) > 2 and parts[0] in groups and parts[1] in ch.group_options(config_dir(), parts[0]):
            return (f"unknown key '{key}': {parts[0]} '{parts[1]}' is not selected; add it, "
                    f"e.g. {parts[0]}=[{parts[1]}] (endostream {command} --help)")
        rest = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") != key]
        try:
            base = compose(command, rest)
        except Exception:  # noqa: BLE001 - another bad override: suggest from the defaults
            base = compose(command, [])
        close = ch.did_you_mean(key, ch.flat_keys(base))
        hint = f"; did you mean {' or '.join(close)}?" if close else ""
        return f"unknown key '{key}'{hint} (endostream {command} --help lists the keys)"
    m = re.search(r"Could not (?:find|load) '([^'/]+)/([^']+)'", text)
    if m:
        group, option = m.groups()
        options = ch.group_options(config_dir(), group)
        close = difflib.get_close_matches(option, options, n=2, cutoff=0.5)
        hint = f"did you mean {' or '.join(close)}? " if close else ""
        return f"unknown {group} '{option}': {hint}expected one of {', '.join(options)}"
    if type(exc).__name__ == "OverrideParseException":
        bad = next((o for o in overrides if "=" not in o), None)
        what = f"'{bad}'" if bad else "an override"
        return f"cannot read {what}: expected key=value (lists: key=[a,b]; endostream {command} --help)"
    return f"bad configuration: {text.splitlines()[0] if text else type(exc).__name__}"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in {"-h", "--help", "help"}:
        if len(argv) > 1 and argv[1] in COMMANDS:
            argv = [argv[1], "--help"]
        else:
            print(usage())
            return 0
    command, overrides = argv[0], argv[1:]
    if command not in COMMANDS:
        close = difflib.get_close_matches(command, list(COMMANDS), n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        print(f"endostream: unknown command {command!r}; {hint}expected one of {', '.join(COMMANDS)}",
              file=sys.stderr)
        return 2
    if any(a in ("-h", "--help") for a in overrides):
        from endostream.config_help import command_help

        purpose, examples = HELP[command]
        print(command_help(config_dir(), command, purpose, examples))
        return 0
    try:
        cfg = compose(command, overrides)
        problems = config_problems(command, overrides, cfg)
    except Exception as exc:  # a bad override must read as one line, not a Hydra traceback
        print(f"endostream {command}: {explain_compose_error(command, overrides, exc)}", file=sys.stderr)
        return 2
    if problems:
        for line in problems:
            print(f"endostream {command}: {line}", file=sys.stderr)
        return 2
    try:
        for target in [PREFLIGHT[command]] if command in PREFLIGHT else []:
            module_name, func_name = target.split(":")
            getattr(importlib.import_module(module_name), func_name)(cfg)
        module_name, func_name = COMMANDS[command].split(":")
        func = getattr(importlib.import_module(module_name), func_name)
        return int(func(cfg) or 0)
    except KeyboardInterrupt:
        return 130
    except (FileNotFoundError, ValueError, RuntimeError, OSError) as exc:
        print(f"endostream {command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
