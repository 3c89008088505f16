"""Benchmark suite: the timeline job on a standard corpus, per configuration (run on demand).

    .venv/bin/python tests/benchmarks/suite.py --quick --out bench-out/          # < 5 min
    .venv/bin/python tests/benchmarks/suite.py --minutes 2 10 30 --out bench-out/ [--peer]
    .venv/bin/python tests/benchmarks/suite.py --quick --configs default --out bench-out/

Corpus: webcam-style (640×480) and picture-in-picture (1280×720 screen, 200 px webcam inset)
recordings of each length, made by ``pipelines/sample_media`` from a real face video and
espeak-ng speech, cached in ``--media`` (default OUT/media) and reused by later runs.

Per recording × configuration, each job in its own process (a fresh local Ray, pinned to the
given cores), it reports: the real-time factor (video s per wall s) with and without Ray's
start-up, CPU seconds per video second of all its processes and the real-time factor they
allow, the stages' own CPU ms per video second (Ray Data's remote cpu time: the figure that
compares configurations on a busy machine) and the real-time factor that work allows,
per-stage wall time and share (Ray Data's stats), sampled frames/s, participant faces/s,
peak memory (summed PSS and RSS of the driver and every Ray process) and the load average
around the run.  Configurations: ``default``; ``unoptimised`` (MTCNN on every sampled frame
at the working size); ``faster`` (detection at 320 px too); ``default`` on 1 core vs 2 (Ray
keeps 2 logical CPUs, so the same actors run, on half the hardware).  On a machine with
CUDA: the same with GPU actors, a detector batch-size sweep and sampled GPU utilisation.

The ceiling beside it: ffmpeg decoding the same file (raw, and at the job's sample rate and
working size) and the job's own decoder alone; the report says what share of that speed the
whole job reaches.  ``--peer``: the MIT ``fer`` package's video path on the same recordings at
the same sample rate (its own environment, ``peer/setup_peer.sh``): our speed / its speed and
the per-second agreement of the dominant emotion.

Writes OUT/suite.json; prints a table.  Timings belong here, not in tests.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
PEER_PYTHON = HERE / "peer" / ".venv" / "bin" / "python"
UNOPTIMISED = ["detector.detection_stride=1", "detector.detection_max_side=null"]
FASTER = ["detector.detection_max_side=320"]  # opt-in: detection at 320 px on top of stride 3
KINDS = ("webcam", "pip")

logger = logging.getLogger("suite")


# --- corpus ---------------------------------------------------------------------------------

def corpus(media: Path, kinds: list[str], minutes: list[float]) -> list[dict[str, Any]]:
    """The recordings (generated once, then reused from ``media``)."""
    from pipelines.sample_media.build import make_pip_recording, make_webcam_recording

    make = {"webcam": make_webcam_recording, "pip": make_pip_recording}
    clips = []
    for m in minutes:
        for kind in kinds:
            path = media / f"{kind}-{m:g}min.mp4"
            if not path.exists():
                started = time.perf_counter()
                print(f"generating {path.name} ...", flush=True)
                make[kind](path, m * 60)
                logger.info("%s generated in %.0f s", path, time.perf_counter() - started)
            clips.append({"kind": kind, "minutes": m, "path": str(path)})
    return clips


# --- the ceiling: decoding alone ------------------------------------------------------------

def _timed(cmd: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return time.perf_counter() - started


def decode_ceiling(path: str) -> dict[str, Any]:
    """ffmpeg's raw and sampled decode of ``path`` and the job's decoder on its own."""
    from operators.io.decode_frames import DecodeFrames, working_size
    from operators.io.probe_media import ProbeMedia
    from operators.io.stage_input import StageInput
    from pipelines.emotion_timeline.build import input_rows
    from pipelines.emotion_timeline.config import load_config

    config = load_config(None, [])
    probe = json.loads(subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
         "stream=width,height:format=duration", "-of", "json", path],
        check=True, capture_output=True, text=True).stdout)
    width, height = probe["streams"][0]["width"], probe["streams"][0]["height"]
    duration = float(probe["format"]["duration"])
    w, h = working_size(width, height, config.decode.max_side)
    fps = config.decode.sample_fps
    raw_s = _timed(["ffmpeg", "-v", "error", "-i", path, "-an", "-f", "null", "-"])
    sampled_s = _timed(["ffmpeg", "-v", "error", "-i", path, "-an", "-vf",
                        f"fps={fps:g},scale={w}:{h}", "-f", "null", "-"])

    from infra.storage import InputRef
    from operators import schema as S

    row = input_rows([InputRef(uri=path, size_bytes=os.path.getsize(path))])[0]
    with tempfile.TemporaryDirectory() as staging:
        started = time.perf_counter()
        row = ProbeMedia().process(
            StageInput(config.storage.storage_options(), staging).process(row))
        frames = sum(len(chunk[S.FRAMES]) for chunk in DecodeFrames(config.decode).process(row))
        job_decoder_s = time.perf_counter() - started
    return {
        "video_s": duration, "working_size": [w, h], "sample_fps": fps,
        "ffmpeg_raw_s": round(raw_s, 2), "ffmpeg_raw_x": round(duration / raw_s, 1),
        "ffmpeg_sampled_s": round(sampled_s, 2),
        "ffmpeg_sampled_x": round(duration / sampled_s, 1),
        "job_decoder_s": round(job_decoder_s, 2),
        "job_decoder_x": round(duration / job_decoder_s, 1), "job_decoder_frames": frames,
    }


# --- one job run (in a child process) --------------------------------------------------------

class GpuSampler:
    """GPU utilisation and memory, sampled every ``interval`` s with nvidia-smi."""

    def __init__(self, interval: float = 0.5):
        self.interval, self.util, self.mem_mib = interval, [], []
        self._halt = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._halt.is_set():
            out = subprocess.run(
                ["nvidia-smi", "--query-gpu=utilization.gpu,memory.used",
                 "--format=csv,noheader,nounits"], capture_output=True, text=True)
            for line in out.stdout.splitlines()[:1]:
                util, mem = (float(v) for v in line.split(","))
                self.util.append(util)
                self.mem_mib.append(mem)
            time.sleep(self.interval)

    def __enter__(self) -> GpuSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._halt.set()
        self._thread.join()

    def summary(self) -> dict[str, float]:
        if not self.util:
            return {}
        return {"gpu_util_mean": round(float(np.mean(self.util)), 1),
                "gpu_util_max": float(max(self.util)), "gpu_mem_max_mib": max(self.mem_mib)}


class CpuSeconds:
    """CPU seconds (user + system) used by this process and its descendants (Ray's workers)
    while the block runs: per process the last reading before it ended, sampled every
    ``interval`` s.  Unlike wall time it barely moves when other work shares the machine, so
    it compares configurations on a busy machine and bounds what a quiet one would reach."""

    def __init__(self, interval: float = 0.5):
        self.interval, self.by_pid = interval, {}
        self._halt = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        import psutil

        me = psutil.Process()
        while True:
            for proc in [me, *me.children(recursive=True)]:
                try:
                    times = proc.cpu_times()
                    self.by_pid[proc.pid] = times.user + times.system
                except psutil.Error:
                    continue
            if self._halt.wait(self.interval):
                return

    def __enter__(self) -> CpuSeconds:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._halt.set()
        self._thread.join()

    @property
    def total(self) -> float:
        return sum(self.by_pid.values())


def one_run(spec: dict[str, Any]) -> dict[str, Any]:
    """Run the job once as ``spec`` says (in this process, which Ray's processes inherit the
    CPU affinity of) and measure it."""
    os.sched_setaffinity(0, spec["cores"])
    import pandas as pd
    import ray
    from bench_timeline import PeakMemory, stage_times

    from infra import ray_cluster
    from operators import schema as S
    from pipelines.emotion_timeline.config import load_config
    from pipelines.emotion_timeline.job import run

    config = load_config(None, ["tracking.enabled=false", *spec["overrides"]])
    gpu = shutil.which("nvidia-smi") is not None and spec.get("gpu", False)
    load_before = os.getloadavg()
    with PeakMemory() as memory, CpuSeconds() as cpu, (
            GpuSampler() if gpu else _Nothing()) as gpus:
        started = time.perf_counter()
        # 2 logical CPUs at least: the 1-core run schedules the same actors as the 2-core one
        ray_cluster.connect(None, max(2, len(spec["cores"])), object_store_bytes=int(
            config.resources.local_object_store_gib * 2**30))
        ray_start_s = time.perf_counter() - started
        try:
            result = run(str(Path(spec["clip"]).parent), spec["out"], config)
        finally:
            ray.shutdown()
    load_after = os.getloadavg()
    clips = result.clips
    timelines = pd.read_parquet(Path(spec["out"]) / "timelines")
    frames = float(clips[S.FRAMES_SAMPLED].sum())
    faces = float((clips[S.FACE_COVERAGE].fillna(0) * clips[S.FRAMES_SAMPLED]).sum())
    job_s = result.wall_s
    stages = stage_times(result.stage_stats)
    total = sum(stages.values()) or 1.0
    stage_cpu = stage_times(result.stage_stats, "cpu")
    work = sum(stage_cpu.values())
    return {
        **{k: spec[k] for k in ("name", "kind", "minutes", "cores", "overrides")},
        "status": clips[S.STATUS].tolist(), "video_s": result.video_s,
        "ray_start_s": round(ray_start_s, 2), "job_wall_s": round(job_s, 2),
        "wall_s": round(job_s + ray_start_s, 2),
        "realtime_x": round(result.video_s / (job_s + ray_start_s), 2),
        "realtime_x_ray_up": round(result.video_s / job_s, 2),
        "frames_per_s": round(frames / job_s, 1), "faces_per_s": round(faces / job_s, 1),
        # CPU seconds per video second, and the real-time factor those CPU seconds allow on
        # the cores given (Ray's start-up included): what a quiet machine would approach
        "cpu_s": round(cpu.total, 1),
        "cpu_s_per_video_s": round(cpu.total / result.video_s, 3),
        "realtime_x_cpu_bound": round(result.video_s * len(spec["cores"]) / cpu.total, 1),
        # the stages' own CPU time (Ray Data's "remote cpu time"): the per-video-second work,
        # free of start-up and of Ray's background processes, which idle along with the wall
        # clock and so grow with the load of a shared machine
        "stage_cpu_s": {k: round(v, 2) for k, v in stage_cpu.items()},
        "work_cpu_ms_per_video_s": round(1000 * work / result.video_s, 1),
        "realtime_x_work_bound": round(result.video_s * len(spec["cores"]) / work, 1)
        if work else None,
        "peak_pss_mib": round(memory.peak_pss / 2**20),
        "peak_rss_sum_mib": round(memory.peak_rss / 2**20),
        "stage_wall_s": {k: round(v, 2) for k, v in stages.items()},
        "stage_share": {k: round(v / total, 3) for k, v in stages.items()},
        "load_avg_before": [round(v, 2) for v in load_before],
        "load_avg_after": [round(v, 2) for v in load_after],
        "timeline_rows": len(timelines),
        **(gpus.summary() if gpu else {}),
    }


class _Nothing:
    def __enter__(self) -> _Nothing:
        return self

    def __exit__(self, *exc) -> None:
        return None


def spawn_run(spec: dict[str, Any], log: Path) -> dict[str, Any]:
    """:func:`one_run` in a child process: a fresh Ray and honest per-run memory figures."""
    result_path = Path(spec["out"]) / "result.json"
    Path(spec["out"]).mkdir(parents=True, exist_ok=True)
    with log.open("a") as handle:
        handle.write(f"\n=== {spec['name']} {spec['kind']} {spec['minutes']} min ===\n")
        handle.flush()
        done = subprocess.run([sys.executable, __file__, "--one", json.dumps(spec),
                               "--result", str(result_path)], stdout=handle, stderr=handle)
    if done.returncode != 0:
        return {**{k: spec[k] for k in ("name", "kind", "minutes", "cores", "overrides")},
                "error": f"exit {done.returncode}, see {log}"}
    return json.loads(result_path.read_text())


# --- the peer -------------------------------------------------------------------------------

def peer_run(clip: str, sample_fps: float, out: Path, log: Path) -> dict[str, Any] | None:
    """fer's video path on ``clip`` in its own environment; None when it is not set up."""
    if not PEER_PYTHON.exists():
        return None
    result = out / "fer.json"
    with log.open("a") as handle:
        handle.write(f"\n=== fer {clip} ===\n")
        handle.flush()
        subprocess.run([str(PEER_PYTHON), str(HERE / "peer" / "run_fer.py"), clip,
                        "--sample-fps", f"{sample_fps:g}", "--json", str(result)],
                       check=True, stdout=handle, stderr=handle)
    return json.loads(result.read_text())


def peer_agreement(fer: dict[str, Any], timelines_dir: Path) -> dict[str, float]:
    """Per second: fer's dominant emotion (mean probabilities of its largest face over the
    second's sampled frames) vs ours (the participant's 1 s window starting at that second)."""
    import pandas as pd

    from operators import schema as S

    ours = pd.read_parquet(timelines_dir)
    ours = ours[ours[S.IS_PARTICIPANT].fillna(False).astype(bool) & ours[S.FACE_PRESENT]]
    ours = ours[np.isclose(ours[S.WINDOW_START_S] % 1.0, 0.0)]
    ours = ours.set_index(ours[S.WINDOW_START_S].round().astype(int))
    per_second: dict[int, list[np.ndarray]] = {}
    for frame in fer["frames"]:
        if frame["faces"]:
            largest = max(frame["faces"], key=lambda f: f["box"][2] * f["box"][3])
            probs = np.array([largest["emotions"][e] for e in S.EMOTIONS], np.float64)
            per_second.setdefault(int(frame["t"]), []).append(probs)
    both = [s for s in per_second if s in ours.index]
    if not both:
        return {"seconds_compared": 0}
    theirs = np.stack([np.mean(per_second[s], axis=0) for s in both])
    mine = ours.loc[both, list(S.PROB_COLUMNS)].to_numpy(np.float64)
    dominant = np.array(S.EMOTIONS)[theirs.argmax(axis=1)]
    return {
        "seconds_compared": len(both),
        "seconds_with_face_fer": len(per_second),
        "seconds_with_face_ours": int(ours.index.nunique()),
        "dominant_agreement": round(float(
            (ours.loc[both, S.DOMINANT_EMOTION].to_numpy() == dominant).mean()), 3),
        "prob_mae": round(float(np.abs(theirs - mine).mean()), 3),
    }


# --- the suite ------------------------------------------------------------------------------

def plan(clips: list[dict[str, Any]], quick: bool, gpu: bool) -> list[dict[str, Any]]:
    """The runs: every clip by default, unoptimised and faster on 2 cores, and the scaling
    runs (1 core) on the webcam recordings (all lengths; the shortest only with --quick);
    --quick runs the picture-in-picture recording by default only."""
    both, one = sorted(os.sched_getaffinity(0))[:2], sorted(os.sched_getaffinity(0))[:1]
    runs = []
    shortest = min(c["minutes"] for c in clips)
    for clip in clips:
        configs = [("default", [], both), ("unoptimised", UNOPTIMISED, both),
                   ("faster", FASTER, both)]
        if clip["kind"] == "webcam" and (not quick or clip["minutes"] == shortest):
            configs.append(("default-1core", [], one))
        if quick and clip["kind"] != "webcam":
            configs = configs[:1]
        if gpu:
            cores = sorted(os.sched_getaffinity(0))
            configs = [(f"gpu-batch{b}-frames{f}",
                        [f"resources.detector.batch_size={b}", f"detector.frames_per_batch={f}"],
                        cores)
                       for b in (1, 2, 4) for f in (25, 50)] + [
                ("gpu-unoptimised", UNOPTIMISED, cores)]
        for name, overrides, cores in configs:
            runs.append({"name": name, "overrides": overrides, "cores": cores, "gpu": gpu,
                         **clip})
    return runs


def print_table(report: dict[str, Any]) -> None:
    print(f"\nmachine: {report['machine']['cpu']} | {report['machine']['cores']} cores | "
          f"load average at start {report['machine']['load_avg_start']}")
    header = (f"{'clip':<16}{'config':<18}{'cores':>5}{'x real':>8}{'x (Ray up)':>11}"
              f"{'CPU s/s':>8}{'x CPU-bound':>12}{'work ms/s':>10}{'x work':>8}"
              f"{'frames/s':>9}{'faces/s':>8}{'PSS MiB':>8}{'RSS MiB':>8}  load")
    print(header)
    print("-" * len(header))
    for r in report["runs"]:
        clip = f"{r['kind']}-{r['minutes']:g}min"
        if "error" in r:
            print(f"{clip:<16}{r['name']:<18}{len(r['cores']):>5}  {r['error']}")
            continue
        print(f"{clip:<16}{r['name']:<18}{len(r['cores']):>5}{r['realtime_x']:>8.2f}"
              f"{r['realtime_x_ray_up']:>11.2f}{r['cpu_s_per_video_s']:>8.3f}"
              f"{r['realtime_x_cpu_bound']:>12.1f}{r['work_cpu_ms_per_video_s']:>10.1f}"
              f"{r['realtime_x_work_bound'] or 0:>8.1f}"
              f"{r['frames_per_s']:>9.1f}{r['faces_per_s']:>8.1f}"
              f"{r['peak_pss_mib']:>8d}{r['peak_rss_sum_mib']:>8d}  "
              f"{r['load_avg_before'][0]:.1f}->{r['load_avg_after'][0]:.1f}")
    print("\nstage CPU ms per video second (Ray Data's remote cpu time; webcam, 2 cores):")
    for r in report["runs"]:
        if r["kind"] == "webcam" and "stage_cpu_s" in r and len(r["cores"]) > 1:
            print(f"  {r['name']:<14}{r['minutes']:g} min: " + ", ".join(
                f"{_short(k)} {1000 * v / r['video_s']:.0f}"
                for k, v in sorted(r["stage_cpu_s"].items(), key=lambda kv: -kv[1])
                if v / r["video_s"] >= 0.0005))
    print("\nper-stage share of worker wall time (default, 2 cores):")
    for r in report["runs"]:
        if r.get("name") == "default" and "stage_share" in r:
            shares = sorted(r["stage_share"].items(), key=lambda kv: -kv[1])
            print(f"  {r['kind']}-{r['minutes']:g}min: " + ", ".join(
                f"{_short(k)} {100 * v:.0f}%" for k, v in shares if v >= 0.005))
    print("\nceiling (decode only) and how close the job gets (default, 2 cores):")
    for c in report["ceilings"]:
        job = next((r for r in report["runs"] if r.get("name") == "default"
                    and r["kind"] == c["kind"] and r["minutes"] == c["minutes"]
                    and "realtime_x" in r), None)
        share = (f" | job {job['realtime_x_ray_up']:.1f}x = "
                 f"{100 * job['realtime_x_ray_up'] / c['ffmpeg_sampled_x']:.0f}% of ffmpeg "
                 f"sampled, {100 * job['realtime_x_ray_up'] / c['job_decoder_x']:.0f}% of its "
                 f"own decoder" if job else "")
        print(f"  {c['kind']}-{c['minutes']:g}min: ffmpeg raw {c['ffmpeg_raw_x']}x, ffmpeg "
              f"{c['sample_fps']:g} fps at {c['working_size'][0]}x{c['working_size'][1]} "
              f"{c['ffmpeg_sampled_x']}x, job's decoder alone {c['job_decoder_x']}x{share}")
    if report["peer"]:
        print("\npeer (fer, same clips, same sample rate):")
        for p in report["peer"]:
            print(f"  {p['kind']}-{p['minutes']:g}min: fer {p['fer_realtime_x']:.2f}x real time "
                  f"({p['fer_detector']}) | ours {p['ours_realtime_x']:.2f}x "
                  f"({p['ours_realtime_x_ray_up']:.2f}x with Ray up) -> "
                  f"{p['speedup']:.1f}x ({p['speedup_ray_up']:.1f}x) | dominant emotion "
                  f"agreement per second {p['agreement'].get('dominant_agreement')} over "
                  f"{p['agreement']['seconds_compared']} s, prob MAE "
                  f"{p['agreement'].get('prob_mae')}")


def _short(stage: str) -> str:
    return stage.replace("MapBatches(", "").replace(")", "").replace("Map(", "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("bench-out"))
    parser.add_argument("--media", type=Path, help="cache of generated recordings "
                        "(default OUT/media)")
    parser.add_argument("--minutes", type=float, nargs="+", default=[2.0, 10.0])
    parser.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS))
    parser.add_argument("--quick", action="store_true",
                        help="2-minute recordings only, fewer runs: under 5 minutes")
    parser.add_argument("--configs", nargs="+", metavar="NAME",
                        help="only these configurations (e.g. default: an old-vs-new check "
                        "of one change)")
    parser.add_argument("--peer", action="store_true",
                        help="also run fer (needs tests/benchmarks/peer/setup_peer.sh)")
    parser.add_argument("--gpu", choices=("auto", "off"), default="auto",
                        help="GPU runs when CUDA is present (auto) or never")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.one:
        args.result.write_text(json.dumps(one_run(json.loads(args.one))))
        return

    import torch

    out = args.out.resolve()
    media = (args.media or out / "media").resolve()
    media.mkdir(parents=True, exist_ok=True)
    log = out / "suite.log"
    minutes = [2.0] if args.quick else args.minutes
    gpu = args.gpu == "auto" and torch.cuda.is_available()
    clips = corpus(media, args.kinds, minutes)
    report: dict[str, Any] = {
        "machine": {"cpu": platform.processor() or platform.machine(),
                    "cores": os.cpu_count(), "load_avg_start": os.getloadavg(),
                    "gpu": torch.cuda.get_device_name(0) if gpu else None,
                    "started": time.strftime("%Y-%m-%d %H:%M:%S %Z")},
        "args": {"minutes": minutes, "kinds": args.kinds, "quick": args.quick},
        "runs": [], "ceilings": [], "peer": [],
    }
    for clip in clips:
        print(f"decode ceiling: {Path(clip['path']).name}", flush=True)
        report["ceilings"].append({"kind": clip["kind"], "minutes": clip["minutes"],
                                   **decode_ceiling(clip["path"])})
    runs = [spec for spec in plan(clips, args.quick, gpu)
            if not args.configs or spec["name"] in args.configs]
    for i, spec in enumerate(runs):
        run_dir = out / "runs" / f"{i:02d}-{spec['kind']}-{spec['minutes']:g}-{spec['name']}"
        shutil.rmtree(run_dir, ignore_errors=True)
        # the job reads a folder: link the recording into the run's own input folder
        (run_dir / "in").mkdir(parents=True)
        (run_dir / "in" / Path(spec["path"]).name).symlink_to(spec["path"])
        spec = {**spec, "clip": str(run_dir / "in" / Path(spec["path"]).name),
                "out": str(run_dir)}
        print(f"run {i + 1}: {spec['name']} on {Path(spec['path']).name} "
              f"({len(spec['cores'])} core(s))", flush=True)
        result = spawn_run(spec, log)
        report["runs"].append(result)
        # fer is slow (and slower on the 1280×720 PiP): --quick runs it on the webcam only
        peer_here = spec["name"] in ("default", "gpu-batch1-frames25") and not (
            args.quick and spec["kind"] != "webcam")
        if args.peer and peer_here:
            fer = peer_run(spec["path"], report["ceilings"][0]["sample_fps"], run_dir, log)
            if fer is None:
                print("peer: tests/benchmarks/peer/.venv missing; run setup_peer.sh first")
            elif "realtime_x" in result:
                fer_x = result["video_s"] / fer["wall_s"]
                report["peer"].append({
                    "kind": spec["kind"], "minutes": spec["minutes"],
                    "fer_detector": fer["detector"], "fer_wall_s": round(fer["wall_s"], 2),
                    "fer_frames": fer["frames_analysed"], "fer_realtime_x": round(fer_x, 2),
                    "ours_realtime_x": result["realtime_x"],
                    "ours_realtime_x_ray_up": result["realtime_x_ray_up"],
                    "speedup": round(result["realtime_x"] / fer_x, 2),
                    "speedup_ray_up": round(result["realtime_x_ray_up"] / fer_x, 2),
                    "agreement": peer_agreement(fer, run_dir / "timelines"),
                })
        (out / "suite.json").write_text(json.dumps(report, indent=2))
    report["machine"]["load_avg_end"] = os.getloadavg()
    (out / "suite.json").write_text(json.dumps(report, indent=2))
    print_table(report)
    print(f"\nJSON: {out / 'suite.json'}   logs: {log}")


if __name__ == "__main__":
    main()
