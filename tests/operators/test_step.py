"""The step contract: the plan is checked before data moves, and every step's output is
made to conform to the declared schema whichever branch made it (without Ray)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from operators import schema as S
from operators.io.decode_frames import DecodeConfig, DecodeFrames
from operators.io.probe_media import ProbeMedia
from operators.io.stage_input import StageInput
from operators.step import ContractError, Grain, Step, StepRunner, check_plan, conform
from operators.vision.detect_faces import FaceDetector, FaceDetectorConfig
from operators.vision.face_emotion import FaceEmotion, FaceEmotionConfig


def _front() -> list[Step]:
    return [StageInput({}, "/tmp"), ProbeMedia(), DecodeFrames(DecodeConfig())]


def test_the_plan_names_a_step_that_reads_a_column_nobody_writes():
    # Face emotion before the detector: FACE_CROPS does not exist yet.
    steps = [*_front(), FaceEmotion(FaceEmotionConfig()), FaceDetector(FaceDetectorConfig())]
    with pytest.raises(ContractError, match=r"step FaceEmotion reads \['face_crops'\], which "
                                            r"no earlier step writes"):
        check_plan(steps, S.INPUT_SCHEMA)


def test_the_plan_refuses_an_undeclared_column():
    class Stray(Step):
        name = "stray"
        writes = ("not_in_the_contract",)

    with pytest.raises(ContractError, match=r"step stray writes 'not_in_the_contract', which "
                                            r"operators/schema\.py does not declare"):
        check_plan([Stray()], S.INPUT_SCHEMA)


def test_each_point_of_the_plan_has_one_column_order():
    plan = check_plan([*_front(), FaceDetector(FaceDetectorConfig()),
                       FaceEmotion(FaceEmotionConfig())], S.INPUT_SCHEMA)
    decoded = plan[2]
    assert S.LOCAL_PATH not in decoded.names and decoded.names[:6] == S.INPUT_SCHEMA.names
    assert plan[-1].names[-2:] == [S.FACE_PROBS, S.FACE_FEATURES]
    assert S.FRAMES not in plan[-1].names and S.FACE_CROPS not in plan[-1].names


def _decode_schema() -> pa.Schema:
    return check_plan(_front(), S.INPUT_SCHEMA)[2]


def _decoded_row(**changes) -> dict:
    row = {S.CLIP_ID: "c", S.URI: "u", S.SIZE_BYTES: 3, S.STATUS: "", S.ERROR: "",
           S.STAGE_SECONDS: 0.1, S.CONTAINER: "mov", S.VIDEO_CODEC: "h264", S.DURATION_S: 2.0,
           S.FPS: 25.0, S.WIDTH: 640, S.HEIGHT: 480, S.ROTATION: 0, S.HAS_AUDIO: True,
           S.CHUNK_INDEX: 0, S.N_CHUNKS: 1, S.CHUNK_START_S: 0.0, S.CHUNK_END_S: 2.0,
           S.FRAMES: np.zeros((1, 2, 2, 3), np.uint8), S.FRAME_TS: np.zeros(1),
           S.FRAME_HEIGHT: 2, S.FRAME_WIDTH: 2, S.AUDIO: np.zeros(4, np.float32),
           S.AUDIO_START_S: 0.0, S.VIDEO_DECODER: "decord"}
    row.update(changes)
    return row


def test_rows_of_every_branch_conform_to_one_schema():
    """A decoded chunk and an error row list their columns in different orders and the
    error row's media facts are NaN floats where the decoded one has ints: after conform
    both have the plan's order and types, so Arrow concatenates their blocks."""
    schema = _decode_schema()
    ok = conform(_decoded_row(), schema, "decode", row=True)
    failed = dict(reversed(list(_decoded_row(
        **{S.STATUS: "decode_error", S.ERROR: "x", S.WIDTH: float("nan"),
           S.HEIGHT: float("nan"), S.ROTATION: float("nan"), S.VIDEO_DECODER: "",
           S.FRAMES: np.zeros((0, 2, 2, 3), np.uint8), S.FRAME_TS: np.zeros(0)}).items())))
    failed = conform(failed, schema, "decode", row=True)
    assert list(ok) == list(failed) == schema.names
    assert isinstance(ok[S.WIDTH], float) and isinstance(ok[S.ROTATION], float)
    tables = [pa.Table.from_pylist([{k: (v.ravel() if isinstance(v, np.ndarray) else v)
                                     for k, v in r.items()}]) for r in (ok, failed)]
    assert pa.concat_tables(tables).num_rows == 2  # refused before: "Schema … different"


def test_a_row_that_cannot_conform_names_the_step_and_the_column():
    schema = _decode_schema()
    with pytest.raises(ContractError, match=r"step decode: output columns differ from its "
                                            r"declaration \(missing \['audio'\], undeclared "
                                            r"\['sound'\]\)"):
        row = _decoded_row()
        row["sound"] = row.pop(S.AUDIO)
        conform(row, schema, "decode", row=True)
    with pytest.raises(ContractError, match=r"step decode: column chunk_index: 1\.5 is not a "
                                            r"whole number"):
        conform(_decoded_row(**{S.CHUNK_INDEX: 1.5}), schema, "decode", row=True)
    with pytest.raises(ContractError, match="step decode: column status: int 3 is not a "
                                            "string"):
        conform(_decoded_row(**{S.STATUS: 3}), schema, "decode", row=True)


def test_numpy_batches_and_tables_conform_too():
    schema = pa.schema([S.CHUNK_SCHEMA.field(c) for c in (S.CLIP_ID, S.FACE_FRAME,
                                                         S.STAGE_SECONDS)])
    frames = np.empty(2, dtype=object)
    frames[:] = [np.array([0, 1], np.int64), np.zeros(0, np.int64)]
    batch = conform({S.STAGE_SECONDS: np.array([1, 2]), S.FACE_FRAME: frames,
                     S.CLIP_ID: np.array(["a", "b"], object)}, schema, "s")
    assert list(batch) == schema.names
    assert batch[S.STAGE_SECONDS].dtype == np.float64
    assert all(v.dtype == np.int32 for v in batch[S.FACE_FRAME])
    table = conform(pa.table({S.STAGE_SECONDS: [1.0], S.CLIP_ID: ["a"],
                              S.FACE_FRAME: pa.array([[1]], pa.list_(pa.int64()))}),
                    schema, "s")
    assert table.schema.equals(schema)


def test_the_runner_sets_up_once_times_and_conforms():
    class Count(Step):
        name = "count"
        grain = Grain.ROW
        writes = (S.ERROR,)
        setups = 0

        def setup(self) -> None:
            type(self).setups += 1

        def process(self, row):
            # another order than the input's
            return dict(reversed(list({**row, S.ERROR: "seen"}.items())))

    schema = check_plan([Count()], S.INPUT_SCHEMA)[0]
    runner = StepRunner(Count(), schema)
    rows = [runner({S.CLIP_ID: str(i), S.URI: "u", S.SIZE_BYTES: 1, S.STATUS: "", S.ERROR: "",
                    S.STAGE_SECONDS: 1.0}) for i in range(3)]
    assert Count.setups == 1
    assert all(list(r) == schema.names and r[S.ERROR] == "seen" for r in rows)
    assert all(r[S.STAGE_SECONDS] > 1.0 for r in rows)
