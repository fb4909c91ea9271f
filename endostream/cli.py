"""`endostream <command> [hydra overrides...]`.

Each command has one top-level Hydra config (``configs/<command>.yaml``) and one function
``run(cfg) -> int``. The config is composed with Hydra's compose API, so the working
directory never changes and relative paths resolve against the folder the command runs in.
"""

from __future__ import annotations

import importlib
import os
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


def config_dir() -> Path:
    """The ``configs/`` folder: ``$ENDOSTREAM_CONFIGS`` or the one beside the package."""
    env = os.environ.get("ENDOSTREAM_CONFIGS")
    return Path(env) if env else Path(__file__).resolve().parent.parent / "configs"


def compose(command: str, overrides: list[str] | None = None):
    """Compose ``configs/<command>.yaml`` with overrides; never touches the working dir."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return hydra_compose(config_name=command, overrides=list(overrides or []))


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in {"-h", "--help", "help"}:
        print("usage: endostream <command> [key=value ...]\ncommands: " + ", ".join(COMMANDS))
        return 0
    command, overrides = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"endostream: unknown command {command!r}; expected one of {', '.join(COMMANDS)}",
              file=sys.stderr)
        return 2
    try:
        cfg = compose(command, overrides)
    except Exception as exc:  # a bad override must read as one line, not a Hydra traceback
        print(f"endostream {command}: bad configuration: {exc}".splitlines()[0], file=sys.stderr)
        return 2
    module_name, func_name = COMMANDS[command].split(":")
    func = getattr(importlib.import_module(module_name), func_name)
    try:
        return int(func(cfg) or 0)
    except KeyboardInterrupt:
        return 130
    except (FileNotFoundError, ValueError, RuntimeError, OSError) as exc:
        print(f"endostream {command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
