"""Benchmark: batch throughput of one ``emoray run`` (issue 19), run on demand, on a quiet
machine (figures taken while other work runs are worthless: say the load with them).

    .venv/bin/python tests/benchmarks/bench_batch.py                    # the 6 × 2-minute batch
    .venv/bin/python tests/benchmarks/bench_batch.py --workloads batch pip-5min webcam-30min
    .venv/bin/python tests/benchmarks/bench_batch.py --seconds 10       # a smoke run (6 × 10 s)

Workloads, each one ``emoray run`` in a fresh process (Ray's start-up included), recordings
made by ``pipelines/sample_media`` (a real face video, espeak-ng speech) and cached in
``--media`` (default OUT/media):

* ``batch``: 3 webcam 640×480 and 3 picture-in-picture 1280×720 recordings of 2 minutes
  (``--seconds``) in one input folder;
* ``pip-5min``: one 5-minute picture-in-picture recording;
* ``webcam-30min``: one 30-minute webcam recording.

For each it reports the process wall time (from launch to exit) and the real-time factor;
the CPU busy share of the machine's cores over the run (``/proc/stat``: the whole machine,
so only meaningful when nothing else runs) and of the job's own processes; and where the
cores' time went: the process tree (the ``emoray`` driver, Ray's raylet and workers, their
ffmpeg children) is sampled every ``--interval`` s and each process's CPU time is credited
to what it is doing (Ray titles a worker after its task or actor, e.g.
``ray::MapWorker(MapBatches(FaceDetector))``):

    start-up        launch until the first pipeline worker exists (imports, preflight,
                    models, Ray's start, planning): wall seconds, and the CPU used meanwhile
    stage/decode    staging, probing, decoding and the voice steps fused with them, and
                    their ffmpeg processes
    detection       FaceDetector actors          emotion     FaceEmotion actors
    shuffle         the groupby(clip) shuffle and the list-column assembly before it
    timeline+write  BuildTimeline and the writer (and any step after it)
    Ray + driver    raylet, GCS, idle workers, Ray Data's own actors, the driver's loop
    idle            the cores' time no process of the machine used
    other           CPU the machine used outside the sampled tree: short-lived processes
                    the sampling missed, and any other work on the machine

Shares are of the cores' time over the whole run (cores × wall); the wall time is split
into start-up, pipeline (while pipeline workers exist) and shut-down.  ``processing_s``
(the steps' own compute seconds, from the clip rows) is printed beside them.
``--memory`` adds the peak PSS of the tree (its sampling costs CPU itself: leave it off for
the CPU figures).  Writes OUT/bench_batch.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil

HERE = Path(__file__).resolve().parent
EMORAY = Path(sys.executable).with_name("emoray")

# What a process's title says it does, first match wins (Ray titles workers "ray::<task>"
# and actors "ray::MapWorker(<operator>)"; fused operators name every step they hold).
CATEGORIES = (
    ("detection", ("FaceDetector",)),
    ("emotion", ("FaceEmotion",)),
    ("timeline+write", ("build_timeline", "BuildTimeline", "TimelineWriter", "StateRecorder")),
    ("shuffle", ("to_list_columns", "ToListColumns", "Shuffle", "Aggregat", "Partition", "Sort",
                 "Reduce", "MapGroups", "groupby")),
    ("stage/decode", ("decode", "probe", "stage", "Voice")),
)
PIPELINE = tuple(name for name, _ in CATEGORIES)
ORDER = ("start-up", *PIPELINE, "Ray + driver", "other", "idle")


def category(title: str) -> str | None:
    """The pipeline step a Ray worker's title belongs to; None for any other process
    (Ray's own, the driver, a child process) and for Ray's own workers."""
    if not title.startswith("ray::"):
        return None
    for name, marks in CATEGORIES:
        if any(mark in title for mark in marks):
            return name
    return None


# --- the recordings -------------------------------------------------------------------------

def recording(media: Path, kind: str, seconds: float, variant: int = 0) -> Path:
    """A cached recording (made once into a temporary name, then moved into place);
    variants differ in their speech rhythm, so no two files of a batch are alike."""
    from pipelines.sample_media.build import make_pip_recording, make_webcam_recording

    path = media / f"{kind}-{seconds:g}s-{variant}.mp4"
    if not path.exists():
        started = time.perf_counter()
        print(f"generating {path.name} ...", flush=True)
        partial = path.with_name(f".{path.name}.partial.mp4")
        make = make_webcam_recording if kind == "webcam" else make_pip_recording
        make(partial, seconds, speech_every_s=6.0 + variant)
        partial.rename(path)
        print(f"  {time.perf_counter() - started:.0f} s", flush=True)
    return path


def workload_inputs(name: str, media: Path, seconds: float, folder: Path) -> Path:
    """The workload's input folder (links to the cached recordings)."""
    if name == "batch":
        files = [recording(media, kind, seconds, i) for kind in ("webcam", "pip")
                 for i in range(3)]
    elif name == "pip-5min":
        files = [recording(media, "pip", 300)]
    elif name == "webcam-30min":
        files = [recording(media, "webcam", 1800)]
    else:
        raise ValueError(f"unknown workload {name!r}")
    folder.mkdir(parents=True, exist_ok=True)
    for path in files:
        (folder / path.name).symlink_to(path)
    return folder


# --- sampling the job's processes -------------------------------------------------------------

def machine_cpu() -> tuple[float, float]:
    """(busy, total) seconds of all cores since boot, from /proc/stat."""
    with open("/proc/stat") as stat:
        fields = [float(v) for v in stat.readline().split()[1:]]
    ticks = os.sysconf("SC_CLK_TCK")
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields) - idle) / ticks, sum(fields) / ticks


class TreeSampler(threading.Thread):
    """CPU seconds of a process and its descendants, credited per sample to what each is
    doing (:func:`category` of its title; a child without one, such as ffmpeg, is its
    worker's work; everything before the first pipeline worker is start-up); the first
    and last moments a pipeline worker existed."""

    def __init__(self, root: int, *, interval: float, memory: bool):
        super().__init__(daemon=True)
        self.root, self.interval, self.memory = root, interval, memory
        self.seconds: dict[str, float] = {}
        self.first_task: float | None = None
        self.last_task: float | None = None
        self.peak_pss = 0
        self.titles: dict[str, set[str]] = {}  # what each category was made of, to check it
        self._halt = threading.Event()
        self._last: dict[int, float] = {}
        self._procs: dict[int, psutil.Process] = {}

    def _title(self, proc: psutil.Process) -> str:
        try:
            return " ".join(proc.cmdline())
        except psutil.Error:
            return ""

    def sample(self) -> None:
        try:
            root = psutil.Process(self.root)
            tree = [root, *root.children(recursive=True)]
        except psutil.Error:
            return
        now = time.monotonic()
        titles = {p.pid: self._title(p) for p in tree}
        starting = self.first_task is None and not any(map(category, titles.values()))
        pss = 0
        for proc in tree:
            # Reuse Process objects: psutil tells a reused pid from the same process.
            proc = self._procs.setdefault(proc.pid, proc)
            try:
                times = proc.cpu_times()
                parent = proc.ppid()
                if self.memory:
                    pss += proc.memory_full_info().pss
            except psutil.Error:
                continue
            used = times.user + times.system
            delta = used - self._last.get(proc.pid, 0.0)
            self._last[proc.pid] = used
            kind = category(titles.get(proc.pid, ""))
            while kind is None and parent in titles:  # ffmpeg is its worker's work
                kind = category(titles[parent])
                try:
                    parent = psutil.Process(parent).ppid()
                except psutil.Error:
                    break
            if kind is not None:
                self.first_task = self.first_task or now
                self.last_task = now
            name = "start-up" if starting else kind or "Ray + driver"
            self.titles.setdefault(name, set()).add(titles.get(proc.pid, "?")[:90])
            self.seconds[name] = self.seconds.get(name, 0.0) + delta
        self.peak_pss = max(self.peak_pss, pss)

    def run(self) -> None:
        while not self._halt.wait(self.interval):
            self.sample()

    def stop(self) -> None:
        self._halt.set()
        self.join()


# --- one run ------------------------------------------------------------------------------------

def run_workload(name: str, inputs: Path, out: Path, overrides: list[str], *,
                 interval: float, memory: bool) -> dict[str, Any]:
    """``emoray run`` on ``inputs`` in a fresh process, measured."""
    import pandas as pd

    cores = os.cpu_count() or 1
    log = out / "emoray.log"
    tracking = f"sqlite:///{out.parent / 'mlflow.db'}"
    command = [str(EMORAY), "run", str(inputs), "--out", str(out / "out"),
               "--tracking-uri", tracking, *[a for o in overrides for a in ("--set", o)]]
    load_before = os.getloadavg()
    busy0, total0 = machine_cpu()
    started = time.monotonic()
    with log.open("wb") as handle:
        proc = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT)
        sampler = TreeSampler(proc.pid, interval=interval, memory=memory)
        sampler.start()
        proc.wait()
    ended = time.monotonic()
    sampler.stop()
    busy1, total1 = machine_cpu()
    if proc.returncode != 0:
        return {"workload": name, "error": f"exit {proc.returncode}, see {log}"}
    wall = ended - started
    clips = pd.read_parquet(out / "out" / "clips")
    video = float(clips["duration_s"].fillna(0).sum())
    machine_busy = busy1 - busy0
    capacity = (total1 - total0) or cores * wall
    first = (sampler.first_task or started) - started
    last = (sampler.last_task or ended) - started
    seconds = dict(sampler.seconds)
    job_cpu = sum(seconds.values())
    breakdown = {k: seconds.get(k, 0.0) for k in ("start-up", *PIPELINE, "Ray + driver")}
    breakdown["other"] = max(0.0, machine_busy - job_cpu)
    breakdown["idle"] = max(0.0, capacity - machine_busy)
    return {
        "workload": name, "recordings": len(clips), "video_s": round(video, 1),
        "statuses": clips["status"].value_counts().to_dict(),
        "wall_s": round(wall, 2), "realtime_x": round(video / wall, 2),
        "startup_s": round(first, 2), "pipeline_s": round(last - first, 2),
        "shutdown_s": round(wall - last, 2),
        "cores": cores, "machine_busy_share": round(machine_busy / capacity, 3),
        "job_busy_share": round(job_cpu / capacity, 3),
        "core_seconds": {k: round(v, 1) for k, v in breakdown.items()},
        "core_share": {k: round(v / capacity, 3) for k, v in breakdown.items()},
        "steps_processing_s": round(float(clips["processing_s"].fillna(0).sum()), 1),
        "peak_pss_mib": round(sampler.peak_pss / 2**20) if memory else None,
        "process_titles": {k: sorted(v) for k, v in sampler.titles.items()},
        "load_avg_before": [round(v, 2) for v in load_before],
        "load_avg_after": [round(v, 2) for v in os.getloadavg()],
        "overrides": overrides, "log": str(log),
    }


def print_report(r: dict[str, Any]) -> None:
    if "error" in r:
        print(f"{r['workload']}: {r['error']}")
        return
    print(f"\n{r['workload']}: {r['recordings']} recording(s), {r['video_s']:.0f} s of video | "
          f"wall {r['wall_s']:.1f} s (start-up {r['startup_s']:.1f}, pipeline "
          f"{r['pipeline_s']:.1f}, shut-down {r['shutdown_s']:.1f}) | "
          f"{r['realtime_x']:.2f}x real time")
    print(f"  CPU busy: {100 * r['machine_busy_share']:.0f}% of {r['cores']} cores (machine), "
          f"{100 * r['job_busy_share']:.0f}% by the job's processes | load "
          f"{r['load_avg_before'][0]:.2f} -> {r['load_avg_after'][0]:.2f} | statuses "
          f"{r['statuses']}" + (f" | peak PSS {r['peak_pss_mib']} MiB"
                                if r["peak_pss_mib"] else ""))
    print(f"  where the cores' time went (core-seconds, share of {r['cores']} cores × wall):")
    for name in ORDER:
        print(f"    {name:<38}{r['core_seconds'][name]:8.1f} s  "
              f"{100 * r['core_share'][name]:5.1f}%")
    print(f"  steps' own compute seconds (clip rows' processing_s): "
          f"{r['steps_processing_s']:.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("bench-out/batch"))
    parser.add_argument("--media", type=Path, help="cache of recordings (default OUT/media)")
    parser.add_argument("--workloads", nargs="+", default=["batch"],
                        choices=("batch", "pip-5min", "webcam-30min"))
    parser.add_argument("--seconds", type=float, default=120.0,
                        help="length of each batch recording (default 120)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="config override for every run")
    parser.add_argument("--interval", type=float, default=0.25,
                        help="seconds between samples of the job's processes")
    parser.add_argument("--memory", action="store_true",
                        help="also sample peak PSS (costs CPU: not for the CPU figures)")
    args = parser.parse_args()
    out = args.out.resolve()
    media = (args.media or out / "media").resolve()
    media.mkdir(parents=True, exist_ok=True)
    # The tracking store is created before any timed run: its first use builds the schema.
    from mlflow.tracking import MlflowClient

    MlflowClient(f"sqlite:///{out / 'mlflow.db'}").search_experiments()
    reports = []
    for name in args.workloads:
        run_dir = out / "runs" / name
        shutil.rmtree(run_dir, ignore_errors=True)
        inputs = workload_inputs(name, media, args.seconds, run_dir / "in")
        print(f"running {name} ...", flush=True)
        report = run_workload(name, inputs, run_dir, args.overrides, interval=args.interval,
                              memory=args.memory)
        print_report(report)
        reports.append(report)
        (out / "bench_batch.json").write_text(json.dumps(reports, indent=2))
    print(f"\nJSON: {out / 'bench_batch.json'}")


if __name__ == "__main__":
    main()
