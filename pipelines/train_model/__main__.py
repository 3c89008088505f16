"""``emoray train``, ``evaluate``, ``prepare`` and ``paired``: training on Ray Train with
MLflow tracking and the model registry (also ``python -m pipelines.train_model train …``).

    emoray train CONFIG.yaml [--set key=value ...] [--promote ALIAS] [--tracking-uri URI]
                             [--address RAY_ADDRESS] [--folds K]
    emoray evaluate MODEL DATA [--format FORMAT] [--split SPLIT] [--per-utterance]
                               [--tracking-uri URI]
    emoray prepare CONFIG.yaml --out FOLDER [--set key=value ...] [--address RAY_ADDRESS]
    emoray paired [--data FOLDER] [--out FOLDER] [--face-model FILE] [--voice-model FILE]
    emoray paired --report PARQUET [--confusion PNG]
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

import ray
import ray.train
from pydantic import ValidationError

from infra import ray_cluster
from infra.logs import setup_logging
from infra.preflight import check_job
from infra.tracking import TrackingConfig, resolve_model_file
from models import face_emotion, voice_emotion
from operators.io.files import is_remote
from pipelines.emotion_timeline.config import cli_overrides
from pipelines.runner import run_command
from pipelines.train.corpora.parquet import read_prepared
from pipelines.train.metrics import classification_report
from pipelines.train.paired import report, write_paired_corpus
from pipelines.train_model.build import (
    cross_validate,
    evaluate_checkpoint,
    folds_table,
    prepare,
    task_of_checkpoint,
    train,
)
from pipelines.train_model.config import DataSource, TrainJobConfig, load_train_config
from pipelines.train_model.prepare import prepare_source

logger = logging.getLogger("emoray.train")

_USER_ERRORS = (ValueError, FileNotFoundError, ValidationError)


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="training config (YAML; see README 'Training')")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="override a config value, e.g. "
                        "train.epochs=5 (repeatable)")
    parser.add_argument("--promote", metavar="ALIAS", help="point this registry alias at the "
                        "new version if it beats the current holder on the validation set")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default: local sqlite "
                                               "in ./mlruns)")
    parser.add_argument("--address", help="Ray cluster address (default: start a local Ray)")
    parser.add_argument("--folds", type=int, metavar="K", help="instead of one run: K "
                        "speaker-disjoint folds of data.train's subjects, each scored by its "
                        "last epoch; prints the fold table (config key folds)")


def run_train(args: argparse.Namespace) -> int:
    overrides = cli_overrides(args, {"tracking_uri": "tracking.uri", "address": "address",
                                     "folds": "folds"})
    try:
        config = load_train_config(args.config, overrides)
        _preflight(config)
        if config.folds is not None:
            if args.promote:
                raise ValueError("--promote registers one model; --folds trains none to keep")
            print(folds_table(cross_validate(config)), end="")
            return 0
        result = train(config, promote=args.promote)
    except _USER_ERRORS as exc:
        logger.error("%s", exc)
        return 2
    except (ray.train.TrainingFailedError, ray.train.ControllerError) as exc:
        logger.error("training failed after %d worker-group restart(s): %s\nRun the same "
                     "command again to continue from the last epoch checkpoint.",
                     config.scaling.max_failures, exc)
        return 1
    best = int(result.history[-1]["best_epoch"]) + 1 if result.history else 0
    logger.info("done: %d epochs, best epoch %d; checkpoint %s; MLflow run %s%s%s",
                len(result.history), best, result.checkpoint, result.run_id,
                f"; registered {config.registry.name} v{result.version}" if result.version
                else "",
                "" if result.promoted is None else
                f"; @{args.promote} {'moved' if result.promoted else 'kept'}")
    return 0


def _preflight(config: TrainJobConfig) -> None:
    """Fail fast, before Ray starts: the data listable, ``storage_path`` writable, MLflow
    and the Ray cluster answering (``infra.preflight``; raises ``PreflightError``)."""
    sources = [s for s in (config.data.train, config.data.val) if s is not None]
    check_job(config.preflight, config.storage,
              inputs=[uri for s in sources for uri in (s.uri, s.fer2013_uri) if uri],
              output=config.storage_path,
              tracking=config.tracking if config.tracking.enabled else None,
              address=config.address)


def add_evaluate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="checkpoint file or MLflow URI (models:/NAME@ALIAS, "
                                      "models:/NAME/VERSION, runs:/ID/PATH)")
    parser.add_argument("data", help="prepared Parquet folder, or a corpus (give --format)")
    parser.add_argument("--format", default="parquet",
                        choices=["parquet", "fer2013", "ferplus", "ravdess", "cremad",
                                 "folders", "manifest"], help="layout of DATA")
    parser.add_argument("--split", choices=["train", "val", "test"],
                        help="evaluate on this split of the corpus (default: all rows)")
    parser.add_argument("--fer2013", help="ferplus only: the FER2013 CSV with the images")
    parser.add_argument("--per-utterance", action="store_true",
                        help="speech corpora: one sample per clip, its speech trimmed, scored "
                             "by the mean of its 1 s windows' probabilities (every 0.5 s), "
                             "speaker-normalised per subject where the model expects it")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI for models:/ and runs:/")


def run_evaluate(args: argparse.Namespace) -> int:
    """Print the evaluation report of a model on a data set; 0 on success, 2 on bad input."""
    tracking = TrackingConfig(uri=args.tracking_uri)
    try:
        with tempfile.TemporaryDirectory(prefix="emoray-eval-") as scratch:
            path = resolve_model_file(args.model, tracking, Path(scratch) / "model")
            task = task_of_checkpoint(path)
            if args.per_utterance and task != "voice":
                raise ValueError(f"--per-utterance scores speech: {args.model} is a {task} model")
            if args.format == "parquet":
                table = read_prepared(args.data)
                if args.split and "split" in table:
                    table = table[table["split"] == args.split]
            else:
                source = DataSource(format=args.format, uri=args.data, split=args.split,
                                    fer2013_uri=args.fer2013,
                                    samples="speech" if args.per_utterance else "windows")
                owns_ray = ray_cluster.connect(None)
                try:
                    out = prepare_source(task, source, str(Path(scratch) / "data"))
                finally:
                    if owns_ray:
                        ray.shutdown()
                table = read_prepared(out)
            predictions = evaluate_checkpoint(task, path, table)
    except _USER_ERRORS as exc:
        logger.error("%s", exc)
        return 2
    report = classification_report(predictions.labels, predictions.probs)
    print(f"{args.model} ({task} model) on {args.data}"
          f"{f' [{args.split}]' if args.split else ''}: {len(table)} "
          f"{'utterances' if args.per_utterance else 'samples'}")
    print(report.to_string(float_format=lambda v: f"{v:.4f}"))
    metrics = predictions.report("eval")
    for dimension in ("valence", "arousal"):
        if f"eval_ccc_{dimension}" in metrics:
            print(f"CCC {dimension}: {metrics[f'eval_ccc_{dimension}']:.4f}")
    return 0


def add_prepare_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="training config (YAML): its task and data sources")
    parser.add_argument("--out", required=True, help="output folder or s3:// prefix; gets "
                                                     "train/ and val/")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="override a config value (repeatable)")
    parser.add_argument("--address", help="Ray cluster address (default: start a local Ray)")


def run_prepare(args: argparse.Namespace) -> int:
    overrides = cli_overrides(args, {"address": "address"})
    try:
        config = load_train_config(args.config, overrides)
        written = prepare(config, args.out)
    except _USER_ERRORS as exc:
        logger.error("%s", exc)
        return 2
    for role, uri in written.items():
        shown = uri if is_remote(uri) else str(Path(uri))
        logger.info("%s: %s (use it as data.%s: {format: parquet, uri: %s})", role, shown,
                    role, shown)
    return 0


def add_paired_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", default="../shared/data",
                        help="folder with fer2013.csv.gz and ravdess_speech_16k/")
    parser.add_argument("--out", default="data/paired", help="writes train.parquet, val.parquet")
    parser.add_argument("--face-model", default=None,
                        help="face checkpoint (default: the shipped default face model)")
    parser.add_argument("--voice-model", default=None,
                        help="voice checkpoint (default: the shipped voice model)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--report", metavar="PARQUET", default=None,
                        help="instead of building: measure the untrained rules (face only, "
                             "voice only, product, mean) on a written split, e.g. "
                             "data/paired/val.parquet")
    parser.add_argument("--confusion", metavar="PNG", default=None,
                        help="with --report: draw the product rule's confusion matrix here")


def run_paired(args: argparse.Namespace) -> int:
    """Write the paired face–voice corpus of the fusion config
    (``pipelines/train_model/configs/fusion_paired.yaml``) from the shared corpora, or with
    ``--report`` print the untrained rules measured on a written split; 0 on success, 2 on
    bad input."""
    if args.confusion and not args.report:
        logger.error("--confusion needs --report")
        return 2
    try:
        if args.report:
            print(report(args.report, args.confusion))
            return 0
        data = Path(args.data)
        written = write_paired_corpus(
            str(data / "fer2013.csv.gz"), str(data / "ravdess_speech_16k"), args.out,
            face_emotion.load(args.face_model), voice_emotion.load(args.voice_model),
            seed=args.seed)
    except _USER_ERRORS as exc:
        logger.error("%s", exc)
        return 2
    for split, path in written.items():
        print(f"{split}: {path}")
    return 0


COMMANDS = {
    "train": (add_train_arguments, run_train, "train a model on Ray Train, tracked in MLflow"),
    "evaluate": (add_evaluate_arguments, run_evaluate,
                 "print a model's evaluation report on a data set"),
    "prepare": (add_prepare_arguments, run_prepare,
                "corpus -> sharded Parquet of training samples (Ray Data)"),
    "paired": (add_paired_arguments, run_paired,
               "FER2013 faces + RAVDESS voices joined by label -> the fusion model's paired "
               "corpus (or --report: the untrained rules on it)"),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.train_model", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (add, _, help_text) in COMMANDS.items():
        add(sub.add_parser(name, help=help_text))
    args = parser.parse_args(argv)
    setup_logging()
    return run_command(COMMANDS[args.command][1], args)


if __name__ == "__main__":
    sys.exit(main())
