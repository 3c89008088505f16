"""The training job's config: the shipped example configs load, ``--set`` overrides reach
nested keys, and mistakes fail with a message naming them."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from pipelines.train_model.config import config_json, load_train_config

CONFIGS = Path(__file__).parents[3] / "pipelines" / "train_model" / "configs"


@pytest.mark.parametrize("name", ["face_fer2013", "face_ferplus", "voice_ravdess",
                                  "voice_ravdess_speaker_norm", "fusion", "temporal"])
def test_example_configs_load(name):
    config = load_train_config(CONFIGS / f"{name}.yaml")
    assert config.task == name.split("_")[0]
    assert config.registry.name  # every example registers its model
    # the dump reloads to the same config (what the workers receive)
    assert type(config).model_validate(config_json(config)) == config


def test_overrides_and_defaults():
    config = load_train_config(CONFIGS / "face_fer2013.yaml", [
        "train.epochs=2", "train.schedule.name=step", "scaling.num_workers=4",
        "register.name=my-faces", "model.init=models:/face-emotion@champion",
        "train.augment.crop_scale=[0.7, 1.0]"])
    assert config.train.epochs == 2 and config.train.schedule.name == "step"
    assert config.scaling.num_workers == 4 and config.registry.name == "my-faces"
    assert config.model.init == "models:/face-emotion@champion"
    assert config.train.augment.crop_scale == (0.7, 1.0)
    assert config.tracking.experiment == "emoray-train"
    assert config.train.early_stopping.metric == "val_macro_f1"


@pytest.mark.parametrize(("override", "message"), [
    ("train.epochs=0", "epochs"),
    ("train.lossy=true", "lossy"),
    ("data.train.format=avi", "format"),
    ("data.train.format=ferplus", "fer2013_uri"),
    ("scaling.use_gpu=maybe", "use_gpu"),
])
def test_mistakes_are_named(override, message):
    with pytest.raises(ValidationError, match=message):
        load_train_config(CONFIGS / "face_fer2013.yaml", [override])


def test_relative_data_paths_are_resolved_on_the_driver(tmp_path, monkeypatch):
    # Ray Train's workers do not run in the command's directory: a relative path (as the
    # example configs use) must already be absolute in the config they receive.
    monkeypatch.chdir(tmp_path)
    config = load_train_config(CONFIGS / "fusion_paired.yaml",
                               ["data.val.uri=s3://bucket/paired/val.parquet"])
    assert config.data.train.uri == str(tmp_path / "data" / "paired" / "train.parquet")
    assert config.data.val.uri == "s3://bucket/paired/val.parquet"
