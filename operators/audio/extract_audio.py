"""Stream a media file's audio as 16 kHz mono float32 samples, window by window.

:class:`AudioStream` runs one ``ffmpeg`` process per file that decodes the first audio stream
and resamples it to :data:`SAMPLE_RATE` Hz mono ``float32`` PCM on a pipe; :meth:`AudioStream.read`
hands out the next ``n`` samples.  Memory stays bounded by what the caller asks for, so a
one-hour recording is read a chunk at a time instead of as one 230 MB array.

Contract
--------
* Input: a local media file path (any container/codec ffmpeg reads) and an optional start time.
* Output: ``np.ndarray`` of ``float32`` samples in [-1, 1] (nominally; ffmpeg does not clip).
* Resources: one ``ffmpeg`` child process (single-threaded audio decode, a few MB of RAM) and one
  thread that drains its stderr.  Both are gone when the context manager exits, also on error.
* Bad input: when ffmpeg fails (missing file, no audio stream, unreadable container, and with
  ``strict=True`` also a damaged or truncated packet mid-stream) :meth:`AudioStream.read` raises
  :class:`AudioDecodeError` carrying ffmpeg's last stderr lines, after handing out every sample
  decoded before the fault, so a caller can keep the good part and record the rest as an error
  row.  With ``strict=False`` ffmpeg skips damaged packets (the output then silently loses
  their duration; see :attr:`AudioStream.stderr_tail`).  No ffmpeg on PATH is an
  infrastructure fault: ``FileNotFoundError`` on entering the ``with`` block.
"""

from __future__ import annotations

import collections
import logging
import os
import re
import subprocess
import threading
from types import TracebackType
from typing import IO, Self

import ffmpeg
import numpy as np

from operators.schema import SAMPLE_RATE

logger = logging.getLogger(__name__)

_BYTES_PER_SAMPLE = 4  # float32
# ffmpeg's last lines are enough to say what went wrong; a corrupt stream can log one line per
# packet for an hour, so keep a bounded tail instead of the whole log.
_STDERR_TAIL_LINES = 20
# ffmpeg prefixes a decoder's messages with its name and memory address: "[aac @ 0x55d…] ".
_ADDRESS = re.compile(r"^\[[^\]]* @ 0x[0-9a-f]+\] ")


class AudioDecodeError(RuntimeError):
    """ffmpeg could not decode the audio; the message ends with ffmpeg's last stderr lines.

    ``reason``: ffmpeg's last complaint alone, without the file's path or the decoder's memory
    address (``[aac @ 0x…]``), so the same damage gives the same text on any machine.
    """

    def __init__(self, message: str, reason: str = "") -> None:
        super().__init__(message)
        self.reason = reason or message


class AudioStream:
    """Context manager over one ffmpeg process decoding ``path``'s first audio stream.

    ``start_s`` seeks before decoding (ffmpeg input seeking, sample-accurate for audio).
    ``strict`` makes ffmpeg stop at the first decode error (``-xerror``); without it ffmpeg skips
    damaged packets and exits 0, so a corrupt stream would look shorter but healthy.  Use::

        with AudioStream(path, start_s=10.0) as stream:
            while (samples := stream.read(160_000)).size:
                ...

    :meth:`read` returns up to ``n_samples`` samples, fewer only at the end of the stream, and an
    empty array once it is exhausted.  If ffmpeg exited with an error, the read that reaches the
    end of its output (and every read after it) raises :class:`AudioDecodeError` instead.
    Leaving the ``with`` block early kills ffmpeg; either way the process is reaped.
    """

    def __init__(
        self, path: str | os.PathLike[str], start_s: float = 0.0, strict: bool = True
    ) -> None:
        if start_s < 0:
            raise ValueError(f"start_s must be >= 0, got {start_s}")
        self.path = os.fspath(path)
        self.start_s = float(start_s)
        self.strict = strict
        self._proc: subprocess.Popen[bytes] | None = None
        self._stdout: IO[bytes] | None = None
        self._stderr_tail: collections.deque[str] = collections.deque(maxlen=_STDERR_TAIL_LINES)
        self._stderr_thread: threading.Thread | None = None
        self._error: AudioDecodeError | None = None
        self._exhausted = False

    @property
    def pid(self) -> int | None:
        """Process id of the ffmpeg child while the stream is open (for monitoring and tests)."""
        return self._proc.pid if self._proc is not None else None

    @property
    def stderr_tail(self) -> str:
        """ffmpeg's last stderr lines so far (warnings about damaged packets show up here)."""
        return "\n".join(self._stderr_tail)

    def __enter__(self) -> Self:
        # -nostdin: ffmpeg would otherwise read (and steal) the parent's terminal input.
        global_args = ["-nostdin", "-hide_banner", "-loglevel", "error"]
        if self.strict:
            global_args.append("-xerror")
        # No seek from the start: `-ss 0` makes ffmpeg's FLV demuxer (no keyframe index) land
        # seconds into the file, and the audio before that was lost.
        seek = {"ss": self.start_s} if self.start_s else {}
        cmd = (
            ffmpeg.input(self.path, **seek)["a:0"]
            .output("pipe:", format="f32le", ac=1, ar=SAMPLE_RATE)
            .global_args(*global_args)
            .compile()
        )
        logger.debug("starting %s", " ".join(cmd))
        self._proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        # ffmpeg blocks once the stderr pipe buffer (64 KB) is full, and we block on stdout:
        # a thread must keep draining stderr for the reads not to deadlock.
        self._stdout = self._proc.stdout
        self._stderr_thread = threading.Thread(
            target=self._drain_stderr, args=(self._proc.stderr,), daemon=True
        )
        self._stderr_thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _drain_stderr(self, pipe: IO[bytes]) -> None:
        for raw in pipe:
            self._stderr_tail.append(raw.decode("utf-8", errors="replace").rstrip())
        pipe.close()

    def read(self, n_samples: int) -> np.ndarray:
        """Return the next up to ``n_samples`` samples as a 1-D ``float32`` array.

        Raises :class:`AudioDecodeError` when the stream ended because ffmpeg failed.
        """
        if self._proc is None or self._stdout is None:
            raise RuntimeError("AudioStream.read() outside its `with` block")
        if n_samples < 0:
            raise ValueError(f"n_samples must be >= 0, got {n_samples}")
        if self._error is not None:
            raise self._error
        if self._exhausted or n_samples == 0:
            return np.empty(0, dtype=np.float32)
        # Read straight into the result; a pipe may deliver less than asked per call, so only
        # an empty read (EOF) means ffmpeg is done.
        samples = np.empty(n_samples, dtype=np.float32)
        view = memoryview(samples).cast("B")
        filled = 0
        while filled < view.nbytes:
            got = self._stdout.readinto(view[filled:])
            if not got:
                self._finish(self._proc)
                break
            filled += got
        if filled < view.nbytes:
            # The last, short read: copy so the unused rest of the buffer is freed.  ffmpeg
            # writes whole samples; flooring only guards against a process dying mid-write.
            samples = samples[: filled // _BYTES_PER_SAMPLE].copy()
        if self._error is not None and samples.size == 0:
            raise self._error
        return samples

    def _finish(self, proc: subprocess.Popen[bytes]) -> None:
        """At EOF: reap ffmpeg and turn a non-zero exit into the stored AudioDecodeError."""
        self._exhausted = True
        returncode = proc.wait()
        self._join_stderr()
        if returncode != 0:
            lines = [_ADDRESS.sub("", line).strip() for line in self._stderr_tail]
            # ffmpeg's last line is often a generic "Error while decoding stream …"; the
            # decoder's own complaint before it says what is wrong.
            specific = [line for line in lines if line and not line.startswith("Error ")]
            self._error = AudioDecodeError(
                f"ffmpeg exited with code {returncode} decoding audio of {self.path!r} "
                f"(start_s={self.start_s}): {self.stderr_tail or '<no stderr>'}",
                reason=(specific or lines or [f"ffmpeg exited with code {returncode}"])[-1][:300],
            )

    def _join_stderr(self) -> None:
        if self._stderr_thread is not None:
            self._stderr_thread.join()
            self._stderr_thread = None

    def close(self) -> None:
        """Stop ffmpeg if it still runs, reap it and release the pipes.  Idempotent."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.kill()
        if self._stdout is not None:
            self._stdout.close()
        proc.wait()
        self._join_stderr()
        self._proc = None
        self._stdout = None
