"""Benchmark: the timeline job on a generated webcam-style recording (run on demand).

    .venv/bin/python tests/benchmarks/bench_timeline.py [--minutes 2 30] [--json out.json]

Prints the real-time factor (video seconds per wall second, Ray's start-up included), Ray
Data's per-stage times and the peak memory (PSS, and the RSS sum) of the driver plus all Ray
processes (sampled every 0.5 s), per recording length side by side, with a breakdown by
process role (at the overall peak, and the largest any one process reached) and the summed
PSS over time: what a memory that grows with the recording's length would show.
Not part of the test command: timings belong here, not in unit tests.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import tempfile
import threading
import time
from pathlib import Path

import psutil

from infra.logs import setup_logging
from pipelines.emotion_timeline.config import load_config
from pipelines.emotion_timeline.job import run
from pipelines.sample_media.build import make_webcam_recording

logger = logging.getLogger("bench")


def _role(proc: psutil.Process) -> str:
    """A readable name for a process: Ray sets worker titles like ``ray::MapWorker(...)``."""
    try:
        title = " ".join(proc.cmdline()) or proc.name()
    except psutil.Error:
        return "?"
    if title.startswith("ray::"):
        return title.split()[0][:70]
    if "raylet" in title:
        return "raylet"
    if "gcs_server" in title:
        return "gcs_server"
    for name in ("dashboard", "log_monitor", "monitor.py", "runtime_env", "ffmpeg"):
        if name in title:
            return name
    return proc.name()[:40]


def store_resident(raylet_pid: int | None) -> int:
    """Resident bytes of Ray's object store: its shared-memory file (mapped by the raylet,
    ``/dev/shm/plasma…``, unlinked) holds a page for every page ever written, so the file's
    allocated blocks are the store's memory.  0 when it cannot be read (no raylet yet, or
    ``/proc/PID/map_files`` needs privileges this user lacks)."""
    if raylet_pid is None:
        return 0
    try:
        with open(f"/proc/{raylet_pid}/maps") as maps:
            for line in maps:
                if "plasma" in line:
                    region = line.split()[0]
                    return os.stat(f"/proc/{raylet_pid}/map_files/{region}").st_blocks * 512
    except OSError:
        pass
    return 0


class PeakMemory:
    """Peak memory of this process and its descendants (Ray's raylet, workers, …).

    Reports summed PSS (the honest figure: Ray's object store is shared memory mapped into
    every worker, and PSS splits it between them) and summed RSS (which counts it once per
    process, so it overstates).  Also keeps, per process role (Ray's worker title, ``raylet``,
    ``driver``…), the largest PSS any one such process reached, and the summed PSS over time
    (one point per ``trace_every`` seconds), to show what grows with a recording's length.
    """

    def __init__(self, interval: float = 0.5, trace_every: float = 10.0):
        self.interval, self.trace_every = interval, trace_every
        self.peak_pss = self.peak_rss = 0
        self.peak_by_role: dict[str, int] = {}
        self.roles_at_peak: dict[str, int] = {}
        # Private memory (USS) per role at the peak: PSS minus USS is each process's share of
        # shared pages, mostly Ray's object store, whose resident size is ``store_at_peak``
        # (bounded by the store's size: a page once written stays resident, so this part
        # rises until the store has been used end to end, then stays).
        self.uss_at_peak: dict[str, int] = {}
        self.store_at_peak = self.peak_store = 0
        self.trace: list[tuple[float, int, int, dict[str, int]]] = []
        self._halt = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        me = psutil.Process()
        started = last_trace = time.monotonic()
        while not self._halt.is_set():
            pss = rss = 0
            roles: dict[str, int] = {}
            private: dict[str, int] = {}
            roles_pids: dict[str, int] = {}
            for proc in [me, *me.children(recursive=True)]:
                try:
                    info = proc.memory_full_info()
                except psutil.Error:
                    continue
                role = "driver" if proc.pid == me.pid else _role(proc)
                roles_pids[role] = proc.pid
                roles[role] = roles.get(role, 0) + info.pss
                private[role] = private.get(role, 0) + info.uss
                self.peak_by_role[role] = max(self.peak_by_role.get(role, 0), info.pss)
                pss, rss = pss + info.pss, rss + info.rss
            store = store_resident(roles_pids.get("raylet"))
            self.peak_store = max(self.peak_store, store)
            if pss > self.peak_pss:
                self.peak_pss, self.roles_at_peak = pss, roles
                self.uss_at_peak, self.store_at_peak = private, store
            self.peak_rss = max(self.peak_rss, rss)
            now = time.monotonic()
            if now - last_trace >= self.trace_every:
                self.trace.append((round(now - started), pss, store, private))
                last_trace = now
            time.sleep(self.interval)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._halt.set()
        self._thread.join()


def stage_times(stats: str, measure: str = "wall") -> dict[str, float]:
    """Total seconds per operator from Ray Data's stats report: ``measure`` "wall" (Remote
    wall time) or "cpu" (Remote cpu time: the stage's own work, without Ray's background
    processes or waiting on a busy CPU)."""
    times, current = {}, None
    for line in stats.splitlines():
        header = re.match(r"\s*Operator \d+ (.+?): ", line)
        if header:
            current = header.group(1)
        found = re.search(rf"Remote {measure} time: .*?([\d.]+)(ms|s|us) total", line)
        if current and found:
            value = float(found.group(1)) * {"s": 1, "ms": 1e-3, "us": 1e-6}[found.group(2)]
            times[current] = times.get(current, 0.0) + value
    return times


def bench(minutes: float, overrides: list[str]) -> dict:
    """Generate a recording of ``minutes``, run the job on it, return the measurements."""
    with tempfile.TemporaryDirectory() as tmp:
        clip = Path(tmp) / "in" / "webcam.mp4"
        clip.parent.mkdir()
        started = time.perf_counter()
        make_webcam_recording(clip, minutes * 60)
        generate_s = time.perf_counter() - started
        config = load_config(None, ["tracking.enabled=false", *overrides])
        with PeakMemory() as memory:
            result = run(str(clip.parent), str(Path(tmp) / "out"), config)
    return {
        "minutes": minutes, "video_s": result.video_s, "wall_s": round(result.wall_s, 2),
        "realtime_factor": round(result.realtime_factor, 2),
        "peak_pss_mib": round(memory.peak_pss / 2**20),
        "peak_rss_sum_mib": round(memory.peak_rss / 2**20),
        "peak_pss_by_role_mib": {k: round(v / 2**20) for k, v in sorted(
            memory.peak_by_role.items(), key=lambda kv: -kv[1])},
        "pss_at_peak_by_role_mib": {k: round(v / 2**20) for k, v in sorted(
            memory.roles_at_peak.items(), key=lambda kv: -kv[1])},
        "uss_at_peak_by_role_mib": {k: round(v / 2**20) for k, v in sorted(
            memory.uss_at_peak.items(), key=lambda kv: -kv[1])},
        "store_at_peak_mib": round(memory.store_at_peak / 2**20),
        "peak_store_mib": round(memory.peak_store / 2**20),
        "pss_trace_mib": [(t, round(v / 2**20), round(store / 2**20))
                          for t, v, store, _ in memory.trace],
        "uss_trace_by_role_mib": [(t, {k: round(v / 2**20) for k, v in private.items()})
                                  for t, _, _, private in memory.trace],
        "status": result.clips["status"].tolist(),
        "stage_wall_s": {k: round(v, 2) for k, v in stage_times(result.stage_stats).items()},
        "generate_s": round(generate_s, 1), "overrides": overrides,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, nargs="+", default=[2.0],
                        help="recording lengths to run, e.g. --minutes 2 30 (side by side)")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    setup_logging("WARNING")
    reports = []
    for minutes in args.minutes:  # each printed when done: long runs take a while
        report = bench(minutes, args.overrides)
        reports.append(report)
        stages = report["stage_wall_s"]
        total = sum(stages.values()) or 1.0
        print(f"{report['minutes']:g} min: wall {report['wall_s']:.1f} s | "
              f"{report['realtime_factor']:.2f}x real time | peak PSS {report['peak_pss_mib']} "
              f"MiB (RSS sum {report['peak_rss_sum_mib']} MiB) | {report['status']}")
        for name, seconds in sorted(stages.items(), key=lambda kv: -kv[1]):
            print(f"  {name:<60} {seconds:8.1f} s  {100 * seconds / total:5.1f}%")
        print("  MiB per process role: PSS at the overall peak (summed) | of it private (USS) "
              "| largest single PSS")
        uss = report["uss_at_peak_by_role_mib"]
        for role, mib in report["pss_at_peak_by_role_mib"].items():
            print(f"    {role:<64} {mib:6d} | {uss.get(role, 0):6d} | "
                  f"{report['peak_pss_by_role_mib'].get(role, 0):6d}")
        print(f"  Ray object store resident: {report['store_at_peak_mib']} MiB at the peak, "
              f"{report['peak_store_mib']} MiB at most")
        trace = report["pss_trace_mib"]
        print("  PSS | object store resident over time (s: MiB|MiB): "
              + " ".join(f"{t}:{v}|{store}" for t, v, store in trace))
        for role in list(uss)[:3]:  # the largest private memories: do they grow?
            print(f"  private (USS) of {role[:50]} over time (s: MiB): " + " ".join(
                f"{t}:{by_role.get(role, 0)}" for t, by_role in report["uss_trace_by_role_mib"]))
    print("\nminutes  real-time  peak PSS MiB  peak RSS-sum MiB")
    for report in reports:
        print(f"{report['minutes']:7g}  {report['realtime_factor']:8.2f}x  "
              f"{report['peak_pss_mib']:12d}  {report['peak_rss_sum_mib']:16d}")
    if args.json:
        args.json.write_text(json.dumps(reports, indent=2))


if __name__ == "__main__":
    main()
