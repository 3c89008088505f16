"""The data contract: column names, Arrow schemas and the clip status vocabulary.

Every operator imports its column names from here; nothing else spells a column as a string.

Rows flow through the timeline job at three grains:

* **chunk rows** (one per clip × time chunk, e.g. 10 s): made by the decoder, they carry the
  sampled frames and the chunk's audio; later stages replace those heavy columns by their
  results (voice features per window, face detections, face emotions).  A clip that cannot be
  read at all becomes a single chunk row with ``status`` set and no media.
* **timeline rows** (one per clip × face track × window): the analyst-facing output.
* **clip rows** (one per input): the terminal status and summary of each input.
"""

from __future__ import annotations

import hashlib
from enum import StrEnum

import pyarrow as pa

EMOTIONS: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
"""The 7 FER2013 categories, in FER2013's label order (index = label id)."""


class Status(StrEnum):
    """Terminal status of an input recording.  Every input ends in exactly one of these."""

    OK = "ok"
    NO_FACE = "no_face"  # decoded fine, no face track found; the timeline still has voice
    NO_AUDIO = "no_audio"  # faces found, but the file has no audio stream
    PARTIAL = "partial"  # decoding stopped part-way; windows before the fault are kept
    DECODE_ERROR = "decode_error"  # container/stream unreadable (corrupt, truncated)
    NOT_VIDEO = "not_video"  # readable media without a video stream, or not media at all
    EMPTY_FILE = "empty_file"  # zero bytes
    READ_ERROR = "read_error"  # storage could not deliver the object (missing, denied)
    FAILED = "failed"  # a worker crashed or raised on this clip on every retry


def decide_status(*, clip_lost: bool = False, upstream: list[str] | tuple[str, ...] = (),
                  chunks_lost: bool = False, face_tracks: int = 0, has_audio: bool = True
                  ) -> Status:
    """The one place a clip's terminal status is decided, from what the steps found.

    In order: no row of the clip survived its retries (``failed``); the first failure a step
    recorded in ``STATUS`` on the clip's rows, in chunk order (``read_error``,
    ``empty_file``, ``not_video``, ``decode_error``, ``partial``); chunks lost after
    repeated worker failures (``partial``); no face track (``no_face``); no audio stream
    (``no_audio``); else ``ok``."""
    if clip_lost:
        return Status.FAILED
    found = [s for s in upstream if s]
    if found:
        return Status(found[0])
    if chunks_lost:
        return Status.PARTIAL
    if not face_tracks:
        return Status.NO_FACE
    if not has_audio:
        return Status.NO_AUDIO
    return Status.OK


VIDEO_EXTENSIONS: tuple[str, ...] = (".mp4", ".mov", ".m4v", ".mkv", ".webm", ".avi", ".flv",
                                     ".ts", ".mts", ".m2ts", ".mpg", ".mpeg", ".3gp", ".wmv",
                                     ".ogv")
"""What file, folder and glob inputs take (a manifest's entries are all kept)."""

SAMPLE_RATE = 16000
"""Samples per second of every ``AUDIO`` column and of the voice models' input: covers the
speech band, and is what speech models expect."""


def clip_id_for(uri: str) -> str:
    """The ``CLIP_ID`` of an input: 16 hex characters of the SHA-1 of its URI.  Stable across
    runs and machines, so it names the input's output files and re-runs replace them."""
    return hashlib.sha1(uri.encode("utf-8")).hexdigest()[:16]

# --- identity and media facts, carried on chunk rows and written on clip rows ---------------
CLIP_ID = "clip_id"  # clip_id_for(uri): stable across runs, names the output files
URI = "uri"
SIZE_BYTES = "size_bytes"
STATUS = "status"
ERROR = "error"
DURATION_S = "duration_s"
FPS = "fps"
WIDTH = "width"  # as displayed, i.e. after applying rotation
HEIGHT = "height"
ROTATION = "rotation"  # degrees clockwise the stored frames must be turned for display
HAS_AUDIO = "has_audio"
VIDEO_CODEC = "video_codec"
CONTAINER = "container"

# --- chunk rows ---------------------------------------------------------------------------
LOCAL_PATH = "local_path"  # node-local copy of the input made by the staging step
STAGE_SECONDS = "stage_seconds"  # compute seconds spent on this row so far, summed per clip
CHUNK_INDEX = "chunk_index"
N_CHUNKS = "n_chunks"  # chunks the decoder planned for the clip: lost ones are detected
CHUNK_START_S = "chunk_start_s"
CHUNK_END_S = "chunk_end_s"
FRAMES = "frames"  # uint8 (n, H, W, 3) RGB at working resolution; dropped after detection
FRAME_TS = "frame_ts"  # list<float64>: presentation time (s) of each sampled frame
AUDIO = "audio"  # list<float32>: SAMPLE_RATE mono samples from chunk_start_s; dropped after voice
AUDIO_START_S = "audio_start_s"
# voice features per analysis window whose start lies in [chunk_start_s, chunk_end_s)
VOICE_WINDOW_START_S = "voice_window_start_s"  # list<float64>
VOICE_SPEECH_RATIO = "voice_speech_ratio"  # list<float32>: share of 10 ms frames with speech
VOICE_PITCH_HZ = "voice_pitch_hz"  # list<float32|null>: median F0 over voiced frames
VOICE_LOUDNESS_DB = "voice_loudness_db"  # list<float32>: RMS level in dBFS
VOICE_MFCC = "voice_mfcc"  # list<list<float32>>: mean MFCC vector per window
# face detections, flattened per chunk ("CSR" layout: FACE_FRAME indexes FRAME_TS)
FACE_FRAME = "face_frame"  # list<int32>
FACE_BOX = "face_box"  # list<list<float32>[4]>: x1, y1, x2, y2 in working-resolution pixels
FACE_SCORE = "face_score"  # list<float32>: detector confidence
FACE_CROPS = "face_crops"  # uint8 (n_faces, S, S, 3) aligned crops; dropped after emotion
# uint8 (n_faces, FACE_THUMB_SIZE²): grey thumbnail of each aligned crop, the only picture
# that reaches the timeline step (mouth motion: who speaks; face motion: a photo or a
# person).  Coarse and never written: the outputs hold no face image.
FACE_THUMB = "face_thumb"
FACE_THUMB_SIZE = 32
FACE_PROBS = "face_probs"  # list<list<float32>[7]>: per-face EMOTIONS probabilities
FACE_FEATURES = "face_features"  # list<list<float32>>: per-face embedding, for fusion
# voice-model outputs per window (same windows as VOICE_WINDOW_START_S), when one is configured
VOICE_PROBS = "voice_probs"  # (n_windows, 7) float32, columns in EMOTIONS order
VOICE_VALENCE = "voice_valence"  # (n_windows,) float32
VOICE_AROUSAL = "voice_arousal"
VOICE_FEATURES = "voice_features"  # (n_windows, D) float32 embedding, for fusion
FRAME_WIDTH = "frame_width"  # working-resolution size the boxes refer to
FRAME_HEIGHT = "frame_height"

TIMELINE = "timeline"  # list<struct TIMELINE_SCHEMA>: a clip's timeline, between build and write

# --- timeline rows ------------------------------------------------------------------------
TRACK_ID = "track_id"  # 0 = participant; null where the clip has no face track
IS_PARTICIPANT = "is_participant"
WINDOW_INDEX = "window_index"
WINDOW_START_S = "window_start_s"
WINDOW_END_S = "window_end_s"
FACE_PRESENT = "face_present"
FACE_FRAMES = "face_frames"  # sampled frames of this track inside the window
PROB_COLUMNS: tuple[str, ...] = tuple(f"p_{e}" for e in EMOTIONS)
DOMINANT_EMOTION = "dominant_emotion"
VALENCE = "valence"
AROUSAL = "arousal"
# How valence/arousal were obtained: circumplex_from_face_probs (face only),
# circumplex_from_fused_probs (product rule: circumplex of the row's fused probabilities),
# fusion_model (a trained fusion model's heads).
VA_SOURCE = "va_source"
FUSION_MODE = "fusion_mode"  # which modalities produced the row: FUSION_MODES
SPEECH_PRESENT = "speech_present"
SPEECH_RATIO = "speech_ratio"
PITCH_HZ = "pitch_hz"
LOUDNESS_DB = "loudness_db"
MFCC_MEAN = "mfcc_mean"
BOX = "box"  # mean box of the track in the window, working-resolution pixels
# Each modality's own output beside the fused one: the face model alone (mean over the
# window's frames of the track; null without a face) and the voice model alone (null where
# the row has no speech attributed to it), with valence/arousal per source.
FACE_PROB_COLUMNS: tuple[str, ...] = tuple(f"face_p_{e}" for e in EMOTIONS)
VOICE_PROB_COLUMNS: tuple[str, ...] = tuple(f"voice_p_{e}" for e in EMOTIONS)
FACE_VALENCE = "face_valence"  # circumplex mapping of the face's probabilities
FACE_AROUSAL = "face_arousal"
# VOICE_VALENCE / VOICE_AROUSAL (the voice model's own heads) keep their chunk-row names.
CONFIDENCE = "confidence"  # [0, 1]: how far to trust the row's estimate (README: Trust)
SPEAKING = "speaking"  # this track's face speaks in this window (mouth moving during speech)
SPEAKING_SCORE = "speaking_score"  # the track's mouth motion in the window (0 = still)
OFFSCREEN_SPEECH = "offscreen_speech"  # speech in the window and no face on screen speaking
ON_SCREEN = "on_screen"  # a face on the screen under test (a photo, a video), not a person here

# --- clip rows ----------------------------------------------------------------------------
FRAMES_SAMPLED = "frames_sampled"
WINDOWS = "windows"
FACE_TRACKS = "face_tracks"
FACE_COVERAGE = "face_coverage"  # share of sampled frames where the participant is detected
SPEECH_COVERAGE = "speech_coverage"  # share of windows with speech present
SHARE_COLUMNS: tuple[str, ...] = tuple(f"share_{e}" for e in EMOTIONS)
PROCESSING_S = "processing_s"
FACE_MODEL = "face_model"
DETECTOR = "detector"
RUN_ID = "run_id"
PROCESSED_AT = "processed_at"
# Names + content hashes of every model that made the row (face, and voice + fusion when
# used): a nightly run reprocesses clips whose identity differs from the current models'.
MODEL_IDENTITY = "model_identity"
# Which library decoded the clip's pictures: "decord" (the default path) or "pyav" (a stream
# decord cannot open or read, e.g. AV1, or keyframes too far apart); null when none did.
VIDEO_DECODER = "video_decoder"
# Why track 0 was chosen as the participant: the evidence that decided (README: Who is the
# participant).
PARTICIPANT_REASON = "participant_reason"

N_MFCC = 13

FUSION_MODES: tuple[str, ...] = ("fusion", "face_only", "voice_only")
"""Values of FUSION_MODE; null where neither a face nor speech is present."""

# --- findings: session metadata, tasks, baselines (issue 17; README: Findings) -------------
# Session metadata from a CSV manifest's optional columns, carried to every output.
PARTICIPANT = "participant"
STUDY = "study"
SESSION = "session"
RECORDED_AT = "recorded_at"  # timestamp (UTC) parsed from the manifest's ISO 8601 text
METADATA_COLUMNS: tuple[str, ...] = (PARTICIPANT, STUDY, SESSION, RECORDED_AT)
TASK = "task"  # the task marker a window (moment: its peak) lies in; null without markers
WARNINGS = "warnings"  # clip rows: list<string>, one entry per bad marker or metadata value
BASELINE_SOURCE = "baseline_source"  # clip rows: BASELINE_SOURCES
BASELINE_WINDOWS = "baseline_windows"  # confident windows of the participant's baseline
BASELINE_SOURCES: tuple[str, ...] = ("baseline_task", "session", "insufficient")
"""Values of BASELINE_SOURCE: the windows of a task named ``baseline``, the whole session, or
too few confident windows for either (``findings.min_baseline_windows``): no baseline, no
``*_z`` values, no moments."""
BASELINE_SIGNALS: tuple[str, ...] = (*PROB_COLUMNS, *FACE_PROB_COLUMNS, *VOICE_PROB_COLUMNS,
                                     VALENCE, AROUSAL, FACE_VALENCE, FACE_AROUSAL,
                                     VOICE_VALENCE, VOICE_AROUSAL, PITCH_HZ, LOUDNESS_DB)
"""Timeline signals that get a baseline-relative value."""
Z_SUFFIX = "_z"
Z_COLUMNS: tuple[str, ...] = tuple(f"{c}{Z_SUFFIX}" for c in BASELINE_SIGNALS)
"""``<signal>_z``: (value − the track's baseline median) / its robust spread (1.4826 × MAD,
floored); null without a baseline or where the signal is null."""
_METADATA_FIELDS = [pa.field(PARTICIPANT, pa.string()), pa.field(STUDY, pa.string()),
                    pa.field(SESSION, pa.string()),
                    pa.field(RECORDED_AT, pa.timestamp("us", tz="UTC"))]
FINDINGS_TIMELINE_FIELDS = [*_METADATA_FIELDS, pa.field(TASK, pa.string()),
                            *[pa.field(c, pa.float32()) for c in Z_COLUMNS]]
FINDINGS_CLIP_FIELDS = [*_METADATA_FIELDS, pa.field(WARNINGS, pa.list_(pa.string())),
                        pa.field(BASELINE_SOURCE, pa.string()),
                        pa.field(BASELINE_WINDOWS, pa.int32())]

TIMELINE_SCHEMA = pa.schema(
    [
        pa.field(CLIP_ID, pa.string(), nullable=False),
        pa.field(URI, pa.string(), nullable=False),
        pa.field(TRACK_ID, pa.int32()),
        pa.field(IS_PARTICIPANT, pa.bool_()),
        pa.field(WINDOW_INDEX, pa.int32(), nullable=False),
        pa.field(WINDOW_START_S, pa.float64(), nullable=False),
        pa.field(WINDOW_END_S, pa.float64(), nullable=False),
        pa.field(FACE_PRESENT, pa.bool_(), nullable=False),
        pa.field(FACE_FRAMES, pa.int32(), nullable=False),
        pa.field(BOX, pa.list_(pa.float32())),  # [x1, y1, x2, y2]
        *[pa.field(c, pa.float32()) for c in PROB_COLUMNS],
        pa.field(DOMINANT_EMOTION, pa.string()),
        pa.field(VALENCE, pa.float32()),
        pa.field(AROUSAL, pa.float32()),
        pa.field(VA_SOURCE, pa.string()),
        pa.field(FUSION_MODE, pa.string()),
        pa.field(SPEECH_PRESENT, pa.bool_()),
        pa.field(SPEECH_RATIO, pa.float32()),
        pa.field(PITCH_HZ, pa.float32()),
        pa.field(LOUDNESS_DB, pa.float32()),
        pa.field(MFCC_MEAN, pa.list_(pa.float32())),  # N_MFCC values
        *[pa.field(c, pa.float32()) for c in (*FACE_PROB_COLUMNS, *VOICE_PROB_COLUMNS)],
        pa.field(FACE_VALENCE, pa.float32()),
        pa.field(FACE_AROUSAL, pa.float32()),
        pa.field(VOICE_VALENCE, pa.float32()),
        pa.field(VOICE_AROUSAL, pa.float32()),
        pa.field(CONFIDENCE, pa.float32()),
        pa.field(SPEAKING, pa.bool_()),
        pa.field(SPEAKING_SCORE, pa.float32()),
        pa.field(OFFSCREEN_SPEECH, pa.bool_()),
        pa.field(ON_SCREEN, pa.bool_()),
        *FINDINGS_TIMELINE_FIELDS,  # appended last and nullable: older files still read
    ]
)
"""One row per clip × face track × window.  Face columns are null where ``face_present`` is
false; voice columns are null where the clip has no audio.  List columns are variable-size
lists because Parquet readers reject null entries of fixed-size lists."""

CLIP_SCHEMA = pa.schema(
    [
        pa.field(CLIP_ID, pa.string(), nullable=False),
        pa.field(URI, pa.string(), nullable=False),
        pa.field(STATUS, pa.string(), nullable=False),
        pa.field(ERROR, pa.string()),
        pa.field(SIZE_BYTES, pa.int64()),
        pa.field(CONTAINER, pa.string()),
        pa.field(VIDEO_CODEC, pa.string()),
        pa.field(DURATION_S, pa.float64()),
        pa.field(FPS, pa.float64()),
        pa.field(WIDTH, pa.int32()),
        pa.field(HEIGHT, pa.int32()),
        pa.field(ROTATION, pa.int32()),
        pa.field(HAS_AUDIO, pa.bool_()),
        pa.field(FRAMES_SAMPLED, pa.int64()),
        pa.field(WINDOWS, pa.int64()),
        pa.field(FACE_TRACKS, pa.int32()),
        pa.field(FACE_COVERAGE, pa.float32()),
        pa.field(SPEECH_COVERAGE, pa.float32()),
        *[pa.field(c, pa.float32()) for c in SHARE_COLUMNS],
        pa.field(DOMINANT_EMOTION, pa.string()),
        pa.field(PROCESSING_S, pa.float64()),
        pa.field(DETECTOR, pa.string()),
        pa.field(FACE_MODEL, pa.string()),
        pa.field(VA_SOURCE, pa.string()),
        pa.field(RUN_ID, pa.string()),
        pa.field(PROCESSED_AT, pa.timestamp("us", tz="UTC")),
        # Appended last and nullable: clip files written before it existed still read.
        pa.field(MODEL_IDENTITY, pa.string()),
        # Appended last and nullable, like MODEL_IDENTITY: older clip files still read.
        pa.field(VIDEO_DECODER, pa.string()),
        pa.field(PARTICIPANT_REASON, pa.string()),
        *FINDINGS_CLIP_FIELDS,  # appended last and nullable: older files still read
    ]
)
"""One row per input recording with its terminal :class:`Status`."""


def _list(value_type: pa.DataType) -> pa.DataType:
    return pa.list_(value_type)


CHUNK_SCHEMA = pa.schema(
    [
        pa.field(CLIP_ID, pa.string()),
        pa.field(URI, pa.string()),
        pa.field(SIZE_BYTES, pa.int64()),  # -1 until staged when the listing had no size
        pa.field(STATUS, pa.string()),  # "" while nothing went wrong
        pa.field(ERROR, pa.string()),  # "" while nothing went wrong
        pa.field(STAGE_SECONDS, pa.float64()),
        pa.field(LOCAL_PATH, pa.string()),
        pa.field(CONTAINER, pa.string()),
        pa.field(VIDEO_CODEC, pa.string()),
        pa.field(DURATION_S, pa.float64()),  # NaN: unknown (the probe failed)
        pa.field(FPS, pa.float64()),
        # Floats on chunk rows, so an unknown size is NaN like the other facts; whole
        # numbers on clip rows.
        pa.field(WIDTH, pa.float64()),
        pa.field(HEIGHT, pa.float64()),
        pa.field(ROTATION, pa.float64()),
        pa.field(HAS_AUDIO, pa.bool_()),
        pa.field(CHUNK_INDEX, pa.int64()),
        pa.field(N_CHUNKS, pa.int64()),
        pa.field(CHUNK_START_S, pa.float64()),
        pa.field(CHUNK_END_S, pa.float64()),
        pa.field(FRAMES, _list(pa.uint8())),
        pa.field(FRAME_TS, _list(pa.float64())),
        pa.field(FRAME_WIDTH, pa.int64()),
        pa.field(FRAME_HEIGHT, pa.int64()),
        pa.field(AUDIO, _list(pa.float32())),
        pa.field(AUDIO_START_S, pa.float64()),
        pa.field(VIDEO_DECODER, pa.string()),  # "" until a decoder read frames
        pa.field(VOICE_PROBS, _list(pa.float32())),
        pa.field(VOICE_VALENCE, _list(pa.float32())),
        pa.field(VOICE_AROUSAL, _list(pa.float32())),
        pa.field(VOICE_FEATURES, _list(pa.float32())),
        pa.field(VOICE_WINDOW_START_S, _list(pa.float64())),
        pa.field(VOICE_SPEECH_RATIO, _list(pa.float32())),
        pa.field(VOICE_PITCH_HZ, _list(pa.float32())),
        pa.field(VOICE_LOUDNESS_DB, _list(pa.float32())),
        pa.field(VOICE_MFCC, _list(pa.float32())),
        pa.field(FACE_FRAME, _list(pa.int32())),
        pa.field(FACE_BOX, _list(pa.float32())),
        pa.field(FACE_SCORE, _list(pa.float32())),
        pa.field(FACE_CROPS, _list(pa.uint8())),
        pa.field(FACE_THUMB, _list(pa.uint8())),
        pa.field(FACE_PROBS, _list(pa.float32())),
        pa.field(FACE_FEATURES, _list(pa.float32())),
    ]
)
"""Every column a chunk row (or an input row before decoding) may carry, with its type.
Array columns are declared by their element type: numpy batches hold them as arrays of any
shape (frames n×H×W×3, boxes n×4), and before the shuffle they become flat lists of that
type (``operators.batches.to_list_columns``), their shapes fixed by the contract.  Which of
these columns a row has depends on where it is in the plan (``operators.step.check_plan``);
which branch of a step made it does not."""

INPUT_SCHEMA = pa.schema([CHUNK_SCHEMA.field(c) for c in (
    CLIP_ID, URI, SIZE_BYTES, STATUS, ERROR, STAGE_SECONDS)])
"""A job's first rows: one per input, nothing known yet but its identity."""

CLIP_FACTS: tuple[str, ...] = (CLIP_ID, URI, SIZE_BYTES, CONTAINER, VIDEO_CODEC, DURATION_S,
                               FPS, WIDTH, HEIGHT, ROTATION, HAS_AUDIO, VIDEO_DECODER)
"""What chunk rows carry of their clip, the same on every chunk, to the clip row."""
_SUMMARY_STATS = (FRAMES_SAMPLED, WINDOWS, FACE_TRACKS, FACE_COVERAGE, SPEECH_COVERAGE,
                  *SHARE_COLUMNS, DOMINANT_EMOTION, VA_SOURCE, STATUS, ERROR, PROCESSING_S,
                  PARTICIPANT_REASON)
CLIP_SUMMARY_SCHEMA = pa.schema(
    [CHUNK_SCHEMA.field(c) for c in CLIP_FACTS]
    + [CLIP_SCHEMA.field(c).with_nullable(True) for c in _SUMMARY_STATS]
    + [pa.field(TIMELINE, pa.list_(pa.struct(list(TIMELINE_SCHEMA))))]
)
"""One row per clip between the timeline step and the writer: the clip's media facts (as on
chunk rows), the summary it can know, and its timeline (``TIMELINE_SCHEMA`` structs)."""


# --- findings: moments and per-task summaries (issue 17; README: Findings) -----------------
MOMENT_KINDS: tuple[str, ...] = ("frustration", "confusion", "delight", "surprise")
KIND = "kind"
RANK = "rank"  # 1 = the clip's strongest moment
START_S = "start_s"
END_S = "end_s"
PEAK_S = "peak_s"
SCORE = "score"
EVIDENCE = "evidence"  # the signals and modalities that drove the moment, with their _z
MOMENTS = "moments"  # list<struct MOMENT_SCHEMA>: a clip's moments, between findings and write
SEGMENTS = "segments"  # list<struct SEGMENT_SCHEMA>: likewise its per-task summaries
DURATION = "duration_s"
CONFIDENT_WINDOWS = "confident_windows"
VALENCE_MEAN = "valence_mean"
AROUSAL_MEAN = "arousal_mean"
VALENCE_Z_MEAN = "valence_z_mean"
AROUSAL_Z_MEAN = "arousal_z_mean"
MOMENT_COUNT_COLUMNS: tuple[str, ...] = tuple(f"moments_{k}" for k in MOMENT_KINDS)
STRONGEST_KIND = "strongest_moment_kind"
STRONGEST_S = "strongest_moment_s"
STRONGEST_SCORE = "strongest_moment_score"

MOMENT_SCHEMA = pa.schema(
    [
        pa.field(CLIP_ID, pa.string(), nullable=False),
        pa.field(URI, pa.string(), nullable=False),
        *_METADATA_FIELDS,
        pa.field(TRACK_ID, pa.int32()),
        pa.field(KIND, pa.string(), nullable=False),
        pa.field(RANK, pa.int32(), nullable=False),
        pa.field(START_S, pa.float64(), nullable=False),
        pa.field(END_S, pa.float64(), nullable=False),
        pa.field(PEAK_S, pa.float64(), nullable=False),
        pa.field(SCORE, pa.float32(), nullable=False),
        pa.field(EVIDENCE, pa.string(), nullable=False),
        pa.field(TASK, pa.string()),
    ]
)
"""One row per moment (``OUT/moments/<clip_id>.parquet``), ranked by score."""

SEGMENT_SCHEMA = pa.schema(
    [
        pa.field(CLIP_ID, pa.string(), nullable=False),
        pa.field(URI, pa.string(), nullable=False),
        *_METADATA_FIELDS,
        pa.field(TASK, pa.string()),
        pa.field(START_S, pa.float64(), nullable=False),
        pa.field(END_S, pa.float64(), nullable=False),
        pa.field(DURATION, pa.float64(), nullable=False),
        pa.field(WINDOWS, pa.int32(), nullable=False),
        pa.field(CONFIDENT_WINDOWS, pa.int32(), nullable=False),
        pa.field(FACE_COVERAGE, pa.float32()),
        pa.field(SPEECH_COVERAGE, pa.float32()),
        pa.field(VALENCE_MEAN, pa.float32()),
        pa.field(AROUSAL_MEAN, pa.float32()),
        pa.field(VALENCE_Z_MEAN, pa.float32()),
        pa.field(AROUSAL_Z_MEAN, pa.float32()),
        *[pa.field(c, pa.float32()) for c in SHARE_COLUMNS],
        *[pa.field(c, pa.int32(), nullable=False) for c in MOMENT_COUNT_COLUMNS],
        pa.field(STRONGEST_KIND, pa.string()),
        pa.field(STRONGEST_S, pa.float64()),
        pa.field(STRONGEST_SCORE, pa.float32()),
    ]
)
"""One row per clip × task marker, plus one with a null ``task`` for the whole session
(``OUT/segments/<clip_id>.parquet``), of the participant's track (track 0)."""

FINDINGS_SCHEMA = pa.schema(
    [*FINDINGS_CLIP_FIELDS,
     pa.field(MOMENTS, pa.list_(pa.struct(list(MOMENT_SCHEMA)))),
     pa.field(SEGMENTS, pa.list_(pa.struct(list(SEGMENT_SCHEMA))))]
)
"""What the findings step adds to the clip summary rows before the writer."""
