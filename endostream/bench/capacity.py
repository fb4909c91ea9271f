"""Rooms by capacity: ``endostream bench scenario=multi`` without ``producers=N`` adds rooms
(one producer process each, the source at its native rate) until the live goals fail, and
prints the largest number of rooms that met them on this machine.

Each room count is one ordinary ``multi`` run (its own report in ``<out>/rooms-<n>/``). The
goals (``capacity.*`` in configs/bench.yaml, docs/BENCH.md): every room gets at least
``min_mask_fps`` masks per second, the rooms' mask rates are within ``fairness`` of each other
(lowest over highest), and the video's capture -> shown p99 stays below ``video_p99_ms`` in every
room. Warm-up frames are left out as in every bench run. The search stops at the first room
count that fails (more rooms only load the machine further) or at ``max_rooms``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any


def room_goals(report: dict[str, Any], goals: dict[str, float]) -> dict[str, Any]:
    """Did this ``multi`` report meet the goals? Per room: masks/s, mask age p99, video p99,
    missed deadlines; then the verdict with the reasons it failed. Pure."""
    rooms_consumer = ((report.get("consumer") or {}).get("rooms")) or {}
    rooms, why = {}, []
    for sid, st in sorted((report.get("streams") or {}).items()):
        rate = st.get("model_fps")
        video = (st.get("end_to_end") or {}).get("p99_ms")
        rooms[sid] = {"mask_fps": rate, "mask_age_p99_ms": (st.get("mask_end_to_end") or {}).get("p99_ms"),
                      "video_p99_ms": video,
                      "missed_deadlines": (rooms_consumer.get(sid) or {}).get("missed_deadlines"),
                      "frames": (rooms_consumer.get(sid) or {}).get("frames")}
        if rate is None or rate < goals["min_mask_fps"]:
            why.append(f"room {sid}: {rate} masks/s < {goals['min_mask_fps']:g}")
        if video is None or video >= goals["video_p99_ms"]:
            why.append(f"room {sid}: video p99 {video} ms >= {goals['video_p99_ms']:g}")
    rates = [r["mask_fps"] for r in rooms.values() if r["mask_fps"]]
    fair = round(min(rates) / max(rates), 3) if len(rates) == len(rooms) and rates else None
    if len(rooms) > 1 and (fair is None or fair < goals["fairness"]):
        why.append(f"mask rates differ: lowest/highest {fair} < {goals['fairness']:g}")
    return {"per_room": rooms, "fairness": fair, "met": not why and bool(rooms), "why": why}


def run_capacity(cfg: Any, run_one: Callable[[Any], int]) -> int:
    """Add rooms from 1 until the goals fail; print and save (``<out>/capacity.json``) the
    largest count that met them, with every count's per-room figures."""
    from omegaconf import OmegaConf

    from endostream.bench.report import machine

    out = Path(str(cfg.out))
    goals = {k: float(v) for k, v in OmegaConf.to_container(cfg.capacity, resolve=True).items() if k != "max_rooms"}
    steps, best, stopped = [], 0, 0
    for n in range(1, int(cfg.capacity.max_rooms) + 1):
        c = OmegaConf.merge(cfg, {"producers": n, "out": str(out / f"rooms-{n}"), "compare": {"variants": None}})
        OmegaConf.set_struct(c, False)
        c.scenario = "multi" if n > 1 else "pipeline"
        rc = run_one(c)
        if rc != 0:  # Ctrl-C / SIGTERM during this count: it is not judged, no more rooms are tried
            stopped = rc
            print(f"rooms {n}: stopped before it finished; not judged", flush=True)
            break
        report = json.loads((out / f"rooms-{n}" / "report.json").read_text())
        verdict = room_goals(report, goals)
        steps.append({"rooms": n, "backend": report.get("backend"), **verdict})
        line = " ".join(f"{sid}:{r['mask_fps']}/s,{r['video_p99_ms']}ms,missed {r['missed_deadlines']}"
                        for sid, r in verdict["per_room"].items())
        print(f"rooms {n}: {'met' if verdict['met'] else 'NOT met'} ({line})"
              + ("" if verdict["met"] else f" - {'; '.join(verdict['why'])}"))
        if not verdict["met"]:
            break
        best = n
    result = {"rooms_max": best, "goals": goals, "steps": steps, "machine": machine(),
              "backend": steps[0]["backend"] if steps else None,
              **({"stopped": True} if stopped else {})}
    out.mkdir(parents=True, exist_ok=True)
    (out / "capacity.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"rooms meeting the goals on this machine ({result['machine'].get('cpu')}, {result['backend'] or 'no count finished'}): "
          f"{best}{' or more (stopped)' if stopped and best else ''} -> {out / 'capacity.json'}")
    return stopped
