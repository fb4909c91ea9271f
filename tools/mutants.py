"""Mutation check: does the test suite notice deliberate breakages?

Each mutant is one small edit of the source (an exact text replacement), applied to its own copy
of the committed tree (``git archive HEAD``; ``--working-tree`` copies the files as they are now,
uncommitted edits included) in a temporary folder; a fast subset of the tests then runs on that copy
(stopping at the first failure). A mutant the subset passes is a breakage the suite did not
notice. The unmutated copy runs first: the subset must pass there, or the score means nothing.

    nice -n 10 .venv/bin/python tools/mutants.py            # all mutants, report and score
    .venv/bin/python tools/mutants.py --list
    .venv/bin/python tools/mutants.py masks-inverted gate-off --no-baseline

Outside CI (it runs the subset once per mutant: about 10-25 minutes on the 2-core VM). Needs
../shared/data. Exit status 1 when a mutant survives.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Quick, real-data tests that together cover masks, backends, preprocessing, sampler, wire format.
SUBSET = ("tests/test_backends.py", "tests/test_trt_runtime.py", "tests/test_quality_floors.py",
          "tests/test_uncertainty.py", "tests/test_scheduler.py", "tests/test_wire.py",
          "tests/test_protocol_conformance.py", "tests/test_parity.py", "tests/test_predict.py",
          "tests/test_demo.py", "tests/test_consumer.py::test_laparoscopy_clip_lossless_records_all_20_frames_and_paints_no_polyp")


@dataclass(frozen=True)
class Mutant:
    name: str
    path: str
    old: str
    new: str
    why: str


MUTANTS = (
    Mutant("masks-inverted", "endostream/inference/segmenter.py",
           "prob = paste_prob(prob_small[i, 0], (h, w), fovs[i])",
           "prob = 1.0 - paste_prob(prob_small[i, 0], (h, w), fovs[i])", "masks inverted after segmentation"),
    Mutant("trt-execute-stub", "endostream/runtime/trt_backend.py",
           "        self._execute(part, batch)\n", "",
           "TensorRT run-time half stubbed: nothing executes, outputs are whatever the buffers hold"),
    Mutant("trt-no-chunking", "endostream/runtime/trt_backend.py",
           "        if batch <= self.max_batch:\n            return self._run(part, given, keep)",
           "        if True:\n            return self._run(part, given, keep)",
           "TensorRT: a batch beyond the profile sent whole (the uncertainty pass's S samples)"),
    Mutant("trt-graph-replay-skipped", "endostream/runtime/trt_backend.py",
           "        self._check(self.cudart.cudaGraphLaunch(self._graphs[key], self.stream), \"cudaGraphLaunch\")",
           "        pass",
           "TensorRT: the captured CUDA graph is never launched"),
    Mutant("uncertainty-constant", "endostream/inference/segmenter.py",
           "return be.to_numpy(prob)[:, 0].std(axis=0).astype(np.float32)",
           "return np.full((self.grid, self.grid), 0.1, np.float32)", "uncertainty replaced by a constant 0.1"),
    Mutant("preprocess-bgr", "endostream/inference/preprocess.py",
           "rgb = resized[:, :, ::-1].astype(np.float32)", "rgb = resized.astype(np.float32)",
           "preprocessing: BGR fed as RGB"),
    Mutant("preprocess-scale", "endostream/inference/preprocess.py",
           "return ((rgb * _SCALE) - 1.0)", "return ((rgb * _SCALE) - 0.5)",
           "preprocessing: wrong normalisation offset"),
    Mutant("fov-ignored", "endostream/inference/preprocess.py",
           "    return x0, y0, x1, y1\n", "    return 0, 0, w, h\n",
           "preprocessing: the field of view is never cropped"),
    Mutant("paste-transposed", "endostream/inference/preprocess.py",
           "cv2.resize(prob_small, (x1 - x0, y1 - y0)", "cv2.resize(prob_small.T.copy(), (x1 - x0, y1 - y0)",
           "pasting back: the probability map transposed"),
    Mutant("paste-nearest", "endostream/inference/preprocess.py",
           "(x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR)", "(x1 - x0, y1 - y0), interpolation=cv2.INTER_NEAREST)",
           "pasting back: nearest-neighbour instead of bilinear"),
    Mutant("gate-off", "endostream/inference/segmenter.py",
           "gated = float(presence[i]) < self.presence_threshold", "gated = False",
           "the presence gate never hides a mask"),
    Mutant("box-axes-swapped", "endostream/inference/segmenter.py",
           "cx, cy, bw, bh = (float(v) for v in box[:4])", "cy, cx, bw, bh = (float(v) for v in box[:4])",
           "box head: x and y swapped"),
    Mutant("temporal-memory-dropped", "endostream/inference/segmenter.py",
           "st.push(memory_out[i:i + 1], prob_small[i:i + 1].copy())", "st.prev_prob = prob_small[i:i + 1].copy()",
           "the temporal memory is never filled"),
    # (Dropping the signal scale would be an equivalent mutant: the shipped mask_scale is 1.0.)
    Mutant("sampler-noise-weight", "endostream/model/scheduler.py",
           "return a_prev ** 0.5 * x0 + (1.0 - a_prev) ** 0.5 * eps, prob",
           "return a_prev ** 0.5 * x0 + (1.0 - a_prev) * eps, prob",
           "sampler: the DDIM update weighs the noise estimate without its square root"),
    Mutant("sampler-ascending-timesteps", "endostream/model/scheduler.py",
           "self.timesteps = [int(s) for s in steps[:num_steps]]",
           "self.timesteps = [int(s) for s in steps[:num_steps]][::-1]",
           "sampler: timesteps run upwards"),
    Mutant("wire-big-endian", "endostream/protocol/wire.py",
           'HEADER = struct.Struct("<2sBBIQQQQHHHBBBBHI"', 'HEADER = struct.Struct(">2sBBIQQQQHHHBBBBHI"',
           "wire format: header byte order"),
    Mutant("wire-raw-transposed", "endostream/protocol/wire.py",
           "img = np.frombuffer(payload, np.uint8).reshape(h.height, h.width, h.channels)",
           "img = np.frombuffer(payload, np.uint8).reshape(h.width, h.height, h.channels)",
           "wire format: raw pixels read with width and height swapped"),
)


def tree_files() -> list[str]:
    """Tracked and untracked-but-not-ignored files: the working tree as the tests see it."""
    out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, check=True,
                         capture_output=True).stdout.decode()
    return [p for p in out.split("\0") if p and (ROOT / p).is_file()]


def make_copy(base: Path, files: list[str] | None) -> Path:
    """``base/main``: a copy of HEAD (``files`` None) or of those working-tree files;
    ``base/shared`` links to the data beside the project, so ../shared/data resolves as usual."""
    tree = base / "main"
    tree.mkdir(parents=True)
    if files is None:
        archive = subprocess.run(["git", "archive", "--format=tar", "HEAD"], cwd=ROOT, check=True,
                                 capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    else:
        for rel in files:
            dst = tree / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, dst)
    (base / "shared").symlink_to(ROOT.parent / "shared")
    return tree


def apply(tree: Path, m: Mutant) -> None:
    f = tree / m.path
    text = f.read_text() if f.is_file() else ""
    if text.count(m.old) != 1:
        raise SystemExit(f"mutant {m.name}: the text to replace occurs {text.count(m.old)} times in {m.path} "
                         "(the source changed: update tools/mutants.py)")
    f.write_text(text.replace(m.old, m.new))


def run_subset(tree: Path, timeout: float) -> tuple[bool, str, float]:
    """(passed, last lines, seconds) of the subset on ``tree`` with its own endostream first on the path."""
    env = dict(os.environ, PYTHONPATH=str(tree), OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE",
               NO_ALBUMENTATIONS_UPDATE="1", ENDOSTREAM_CACHE=str(tree.parent / "cache"))
    t0 = time.monotonic()
    try:
        r = subprocess.run([str(ROOT / ".venv" / "bin" / "python"), "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
                            *SUBSET], cwd=tree, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return False, "timed out", time.monotonic() - t0
    lines = [ln for ln in (r.stdout + r.stderr).splitlines() if ln.strip()]
    failed = next((ln for ln in lines if ln.startswith("FAILED") or ln.startswith("ERROR")), "")
    return r.returncode == 0, failed or (lines[-1] if lines else ""), time.monotonic() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("names", nargs="*", help="mutants to run (default: all)")
    ap.add_argument("--list", action="store_true", help="list the mutants and exit")
    ap.add_argument("--no-baseline", action="store_true", help="skip the unmutated run")
    ap.add_argument("--working-tree", action="store_true", help="copy the working tree, not HEAD")
    ap.add_argument("--timeout", type=float, default=1200.0, help="seconds per subset run")
    args = ap.parse_args()
    if args.list:
        for m in MUTANTS:
            print(f"{m.name:30s} {m.path}: {m.why}")
        return 0
    chosen = [m for m in MUTANTS if not args.names or m.name in args.names]
    unknown = set(args.names) - {m.name for m in MUTANTS}
    if unknown:
        raise SystemExit(f"unknown mutants: {', '.join(sorted(unknown))} (see --list)")
    files = tree_files() if args.working_tree else None
    with tempfile.TemporaryDirectory(prefix="mutants-") as tmp:
        if not args.no_baseline:
            ok, last, secs = run_subset(make_copy(Path(tmp) / "baseline", files), args.timeout)
            print(f"baseline (no mutation): {'pass' if ok else 'FAIL'} in {secs:.0f} s  {last}", flush=True)
            if not ok:
                raise SystemExit("the unmutated tree fails the subset: fix that first")
        survived = []
        for m in chosen:
            tree = make_copy(Path(tmp) / m.name, files)
            apply(tree, m)
            ok, last, secs = run_subset(tree, args.timeout)
            print(f"{'SURVIVED' if ok else 'killed  '} {m.name:30s} {secs:5.0f} s  {last[:150]}", flush=True)
            if ok:
                survived.append(m)
            shutil.rmtree(Path(tmp) / m.name, ignore_errors=True)
    killed = len(chosen) - len(survived)
    print(f"score: {killed}/{len(chosen)} mutants killed" + (
        "; not noticed: " + ", ".join(f"{m.name} ({m.why})" for m in survived) if survived else ""))
    return 1 if survived else 0


if __name__ == "__main__":
    raise SystemExit(main())
