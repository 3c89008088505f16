"""Job config: defaults, YAML + overrides, and the shared analysis grid."""

from __future__ import annotations

import pytest

from pipelines.emotion_timeline.config import load_config


def test_defaults_and_overrides(tmp_path):
    cfg = load_config()
    assert cfg.decode.sample_fps == 5 and cfg.window_s == 1.0 and cfg.hop_s == 0.5
    yaml_file = tmp_path / "job.yaml"
    yaml_file.write_text("decode:\n  sample_fps: 2\nhop_s: 0.25\n")
    cfg = load_config(yaml_file, ["detector.min_face_size=60", "timeline.median_windows=5"])
    assert cfg.decode.sample_fps == 2 and cfg.detector.min_face_size == 60
    assert cfg.decode.hop_s == cfg.voice.hop_s == cfg.timeline.hop_s == 0.25


def test_bad_config_is_refused_with_a_reason(tmp_path):
    with pytest.raises(ValueError, match="top level"):
        load_config(None, ["decode.hop_s=0.25"])
    with pytest.raises(ValueError, match=r"key\.sub=value"):
        load_config(None, ["decode.sample_fps"])
    with pytest.raises(ValueError, match="extra"):
        load_config(None, ["decode.sample_rate=3"])


def test_fusion_defaults_to_the_product_rule_and_refuses_contradictions():
    cfg = load_config()
    assert cfg.fusion == "product" and cfg.voice_model is None and cfg.fusion_model is None
    # a trained fusion model alone selects it (with the shipped voice model)
    assert load_config(None, ["fusion_model=f.pt"]).fusion == "learnt"
    assert load_config(None, ["fusion=face_only"]).fusion == "face_only"
    assert load_config(None, ["voice_model=v.pt"]).fusion == "product"
    with pytest.raises(ValueError, match="needs fusion_model"):
        load_config(None, ["fusion=learnt"])
    with pytest.raises(ValueError, match="fusion=product"):
        load_config(None, ["fusion=product", "fusion_model=f.pt"])
    with pytest.raises(ValueError, match="face_only runs no voice model"):
        load_config(None, ["fusion=face_only", "voice_model=v.pt"])
    with pytest.raises(ValueError, match="fusion"):
        load_config(None, ["fusion=mean"])
