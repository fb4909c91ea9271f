"""Errors that say what to do: a taken viewer port or ZeroMQ endpoint stops the consumer at
once (real processes, real sockets), unknown keys get "did you mean", type errors name the key,
every missing mandatory value is one line; `predict input=` takes one image file."""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time

import cv2
import numpy as np
import pytest
import zmq

from conftest import ENV, REPO, cli, free_endpoint, summary
from endostream.cli import COMMANDS, main


def _run_measured(args: list[str], timeout: float = 120) -> tuple[int, str, float, float]:
    """(exit code, stdout+stderr, wall s, CPU s of the child). CPU time is what the child did
    before failing; wall time on this shared machine also counts waiting for a core."""
    t0 = time.monotonic()
    with open(os.devnull, "rb") as devnull:
        p = subprocess.Popen(args, cwd=REPO, env=ENV, stdin=devnull, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    killer = threading.Timer(timeout, p.kill)  # a command that got past its checks may run on
    killer.start()
    try:
        out = p.stdout.read()
        _, status, usage = os.wait4(p.pid, 0)
    finally:
        killer.cancel()
    p.returncode = os.waitstatus_to_exitcode(status)
    return p.returncode, out, time.monotonic() - t0, usage.ru_utime + usage.ru_stime


def _assert_one_line_error(rc: int, out: str, wall: float, cpu: float, *needles: str) -> None:
    assert rc != 0, out
    assert "Traceback" not in out and len(out.strip().splitlines()) == 1, out
    assert "model for" not in out and "consumer live on" not in out  # before the model loads
    for needle in needles:
        assert needle in out, out
    # The acceptance bound is 10 s. A niced child on a loaded 2-core machine can wait longer
    # than that for a core, so the work it did (CPU) is held to it, the wall clock loosely.
    assert cpu < 10.0 and wall < 60.0, (cpu, wall)


def test_busy_viewer_port_exits_non_zero_at_once(tmp_path):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        rc, out, wall, cpu = _run_measured(cli(
            "consume", "sink=[video,viewer]", f"sink.viewer.port={port}",
            f"transport.endpoint={free_endpoint()}", f"out={tmp_path / 'out'}"))
    _assert_one_line_error(rc, out, wall, cpu, f"viewer port 127.0.0.1:{port} is already in use",
                           "sink.viewer.port=")


def test_busy_zmq_endpoint_exits_non_zero_at_once(tmp_path):
    ep = free_endpoint()
    ctx = zmq.Context()
    holder = ctx.socket(zmq.SUB)  # another consumer holds the endpoint
    holder.bind(ep)
    try:
        rc, out, wall, cpu = _run_measured(cli("consume", f"transport.endpoint={ep}",
                                               f"out={tmp_path / 'out'}"))
    finally:
        holder.close(linger=0)
        ctx.term()
    _assert_one_line_error(rc, out, wall, cpu, f"transport endpoint {ep} is already in use",
                           "transport.endpoint=")


def test_second_consumer_on_the_same_ports_is_refused(tmp_path, procs):
    """The issue's case: a consumer with a viewer is running; a second one with the same
    defaults would have shown nothing of its own. It exits non-zero, the first keeps running."""
    from conftest import wait_consumer_ready

    ep = free_endpoint()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    args = ["consume", "sink=[viewer]", f"sink.viewer.port={port}", f"transport.endpoint={ep}",
            "idle_timeout_s=60", "model.threads=1"]
    first = procs(cli(*args, f"out={tmp_path / 'one'}"), tmp_path / "one.log")
    wait_consumer_ready(first)
    rc, out, wall, cpu = _run_measured(cli(*args, f"out={tmp_path / 'two'}"))
    _assert_one_line_error(rc, out, wall, cpu, "already in use")
    assert first.p.poll() is None, "the first consumer must keep running"


# One wrong value per command, as a user would type it. Each must stop before anything starts:
# one line naming the key, the value and what is expected, exit 2.
BAD_VALUES = {
    "demo": ("max_frames=abc", "an integer"),
    "produce": ("loop=maybe", "true or false"),
    "consume": ("max_frames=abc", "an integer"),
    "keys": ("action=delete", "one of create, list, allow"),
    "train": ("train.lr=fast", "a number"),
    "eval": ("sequence=maybe", "true or false"),
    "predict": ("model.steps=two", "an integer"),
    "export": ("precision=int4", "one of fp32, fp16, int8"),
    "bench": ("scenario=pipelin", "one of transport, model, pipeline"),
    "batch": ("workers=two", "an integer"),
}
# Mandatory values the commands need to get as far as their type check.
_NEEDS = {"predict": ["input=a", "output=b"], "batch": ["input=a", "output=b"]}


def test_every_command_has_a_wrong_value_case():
    assert set(BAD_VALUES) == set(COMMANDS)


@pytest.mark.parametrize("command", list(BAD_VALUES))
def test_wrong_value_stops_every_command_before_it_starts(command, tmp_path):
    """The endpoint is held by another socket: a command that got past its type check would
    stop on the busy endpoint (or bind, or load the model) instead of naming the value."""
    override, expected = BAD_VALUES[command]
    ep = free_endpoint()
    ctx = zmq.Context()
    holder = ctx.socket(zmq.SUB)
    holder.bind(ep)
    extra = [f"transport.endpoint={ep}"] if command in ("demo", "produce", "consume") else []
    extra += [f"out={tmp_path / 'out'}"] if command in ("demo", "consume", "bench") else []
    try:
        rc, out, wall, cpu = _run_measured(cli(command, *_NEEDS.get(command, []), *extra, override),
                                           timeout=60)
    finally:
        holder.close(linger=0)
        ctx.term()
    assert rc == 2, out
    _assert_one_line_error(rc, out, wall, cpu, f"endostream {command}: {override}: expected {expected}")
    assert "already in use" not in out
    assert cpu < 5.0, cpu  # composing and checking only: no model, no torch


def test_no_sinks(tmp_path):
    r = subprocess.run(cli("consume", "sink=[]", f"transport.endpoint={free_endpoint()}",
                           f"out={tmp_path}", "idle_timeout_s=1", "model.threads=1"),
                       cwd=REPO, env=ENV, capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stdout + r.stderr
    assert summary(tmp_path)["sink_errors"] == {} and "not in struct" not in r.stderr


@pytest.mark.parametrize("argv, expected", [
    (["consume", "model.stepz=1"], "unknown key 'model.stepz'; did you mean model.steps"),
    (["consume", "outt=x"], "unknown key 'outt'; did you mean out?"),
    (["consume", "sink=[vewer]"], "unknown sink 'vewer': did you mean viewer?"),
    (["consume", "modality=colonscopy"], "unknown modality 'colonscopy': did you mean colonoscopy"),
    (["consume", "sink.viewer.port=8091"], "sink 'viewer' is not selected; add it, e.g. sink=[viewer]"),
    (["consume", "model.steps=two"], "model.steps=two: expected an integer of at least 0 or null (K denoising steps"),
    (["consume", "idle_timeout_s=soon"], "idle_timeout_s=soon: expected a number"),
    (["bench", "frames=many"], "frames=many: expected an integer"),
    (["bench", "compare.variants={a:{model:{steps:two}}}"],
     "compare.variants.a: model.steps=two: expected an integer of at least 0 or null"),
    (["bench", "compare.variants={a:{model:{backend:onnxruntime}},b:{model:{stepz:1}}}"],
     "compare.variants.b: unknown key 'model.stepz'"),
    (["consume", "--verbose"], "cannot read '--verbose': expected key=value"),
    (["consum"], "unknown command 'consum'; did you mean consume?"),
])
def test_bad_overrides_are_one_line_that_says_what_to_do(argv, expected, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert expected in err and len(err.strip().splitlines()) == 1, err


def test_words_the_comment_names_are_accepted(capsys):
    from endostream.cli import compose, config_problems

    for override in ("model.threads=auto", "model.backend=onnxruntime", "model.steps=2",
                     "overlay.opacity=1", "max_frames=null"):
        assert config_problems("consume", [override], compose("consume", [override])) == [], override


def test_every_missing_mandatory_value_is_one_line(capsys):
    assert main(["predict"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["endostream predict: missing value: input=... (a folder of images or one image file)",
                   "endostream predict: missing value: output=... (folder for the mask PNGs)"]
    assert main(["predict", "input=x"]) == 2
    assert capsys.readouterr().err.strip() == ("endostream predict: missing value: output=... "
                                               "(folder for the mask PNGs)")


def test_predict_one_image_file(tmp_path, capsys):
    img = np.zeros((120, 160, 3), np.uint8)
    img[:] = (40, 40, 140)
    cv2.circle(img, (80, 60), 25, (120, 180, 230), -1)
    src = tmp_path / "frame one.png"
    cv2.imwrite(str(src), img)
    assert main(["predict", f"input={src}", f"output={tmp_path / 'masks'}", "model.threads=1"]) == 0
    mask = cv2.imread(str(tmp_path / "masks" / "frame one.png"), cv2.IMREAD_GRAYSCALE)
    assert mask.shape == (120, 160) and set(np.unique(mask)) <= {0, 255}
    (tmp_path / "notes.txt").write_text("x")
    assert main(["predict", f"input={tmp_path / 'notes.txt'}", f"output={tmp_path / 'm2'}"]) == 1
    err = capsys.readouterr().err.strip()
    assert "is not an image" in err and len(err.splitlines()) == 1


def test_port_check_agrees_with_the_transport():
    from endostream.consumer.ports import default_endpoint
    from endostream.protocol.factory import resolve_endpoint

    for tcfg in ({"mode": "live", "endpoint": None}, {"mode": "lossless", "endpoint": None},
                 {"mode": "live", "endpoint": "tcp://127.0.0.1:7001"}):
        assert default_endpoint(tcfg) == resolve_endpoint(tcfg)
