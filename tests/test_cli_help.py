"""`endostream <command> --help` / `-h` for every command: purpose, config groups and keys with
their types (the schema) and meanings (the schema, the group files' comments), examples; exit 0."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ENV, REPO, cli
from endostream.cli import COMMANDS, HELP, config_dir, main
from endostream.config_help import read_yaml_docs, schema_rows
from endostream.config_schema import SCHEMAS


@pytest.mark.parametrize("command", list(COMMANDS))
def test_help_for_every_command(command, capsys):
    for flag in ("--help", "-h"):
        assert main([command, flag]) == 0
        text = capsys.readouterr().out
        assert text.startswith(f"endostream {command}: {HELP[command][0]}")
        assert "examples:" in text and HELP[command][1][0] in text
        # every key of the command's schema is listed with its default, its type and its meaning
        rows = schema_rows(SCHEMAS[command])
        assert len(rows) >= 3, f"{command} has no keys?"
        for key, value, kind, meaning in rows:
            row = next((line for line in text.splitlines()
                        if line.strip() == f"{key}:" or line.strip().startswith(f"{key}: ")), "")
            assert row.strip().startswith(f"{key}: {value}".strip()), f"{key} missing from {command} --help"
            assert (not kind or f"[{kind}]" in row) and meaning in row, row
        # and what the command's file changes in its groups, with its comment
        for k in read_yaml_docs(config_dir() / f"{command}.yaml")[1]:
            assert f"{k.key}: {k.value}" in text and k.comment in text, k.key


def test_consume_help_lists_groups_and_the_override_keys(capsys):
    assert main(["consume", "--help", "sink=[viewer]"]) == 0  # --help wins over overrides
    text = capsys.readouterr().out
    assert ("sink=[video]   a list: any of masks, none, republish, video, viewer, window; "
            "sink=[] for none") in text
    assert "sink.viewer.port: 8090" in text and "transport.endpoint: null" in text
    assert "no_signal_after_ms: 1000" in text and "NO SIGNAL card" in text
    assert "model.threads: null" in text and "int, or auto" in text  # comment on the same line
    assert "max_frames: null" in text and "[an integer of at least 0 or null]" in text  # its type
    assert "transport.mode: live" in text and "[one of live, lossless]" in text  # a group key's type
    assert "_target_" not in text


def test_usage_lists_commands(capsys):
    for argv in ([], ["--help"], ["-h"], ["help"]):
        assert main(argv) == 0
        out = capsys.readouterr().out
        assert out.startswith("usage: endostream <command>") and all(c in out for c in COMMANDS)
    assert main(["help", "predict"]) == 0
    assert capsys.readouterr().out.startswith("endostream predict: ")


def test_help_through_the_installed_script():
    script = Path(sys.executable).parent / "endostream"  # the console script beside this interpreter
    r = subprocess.run([str(script), "consume", "--help"], cwd=REPO, env=ENV,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stderr == "" and "sink.viewer.port" in r.stdout
    r = subprocess.run(cli("predict", "-h"), cwd=REPO, env=ENV, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "input: ???" in r.stdout and "??? marks a value you must give" in r.stdout


def test_yaml_comments_are_read_like_a_person_reads_them(tmp_path):
    f = tmp_path / "x.yaml"
    f.write_text("# header line one\n# line two\ndefaults:\n  - a: b   # not a key\n  - _self_\n"
                 "top: 1            # the top key\nlong: 2           # first part\n"
                 "                  # second part\n# documents the block below\nblock:\n"
                 "  inner: '#not a comment'  # the inner key\n  list: [1, 2]  # a list\n")
    header, keys = read_yaml_docs(f)
    assert header == "header line one line two"
    got = {k.key: (k.value, k.comment) for k in keys}
    assert got == {"top": ("1", "the top key"), "long": ("2", "first part second part"),
                   "block": ("", "documents the block below"),
                   "block.inner": ("'#not a comment'", "the inner key"), "block.list": ("[1, 2]", "a list")}
