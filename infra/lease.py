"""A lease in the output store, so that one job at a time works on an output.

Layout: ``<dir>/<generation>.json`` (12-digit generation number), each holding a
:class:`LeaseInfo`.  The highest generation is the current lease.

* **Acquire**: read the highest generation; if it is live (not expired, not released, and
  its process is not known dead) the caller loses with :class:`LeaseHeldError`.  Otherwise create
  the *next* generation with an exclusive create — S3 ``PutObject`` with
  ``If-None-Match: *`` (conditional writes, on AWS since 2024 and in moto), a hard link on a
  local filesystem — so of two contenders exactly one creates it; the other reads the
  winner's lease and loses.  After creating, the winner reads its lease back and checks it
  is still its own.
* **Renew**: a background thread rewrites the holder's own generation with a later expiry
  every ``renew_s``; only the holder ever writes that object.  If a newer generation has
  appeared (someone judged the lease stale), the holder has lost it: :attr:`Lease.lost`.
* **Release**: delete the holder's own generation.

The guarantee, honestly: mutual exclusion holds as long as the store honours exclusive
creates (AWS S3, moto, MinIO ≥ 2024, local POSIX filesystems) and the holder renews within
``ttl_s`` (a holder paused longer than the TTL — a stopped VM — can be overtaken, and then
learns it at its next renewal).  On a store that silently ignores ``If-None-Match``, the
read-back after ``settle_s`` narrows but cannot close the race.  A holder on this host whose
process is gone (SIGKILL, OOM kill) is stale at once, so a restart on the same machine does
not wait for the TTL.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path, PurePosixPath

from botocore.exceptions import BotoCoreError

from operators.io.files import StorageOptions, is_remote, join, open_fs

logger = logging.getLogger(__name__)


class LeaseHeldError(RuntimeError):
    """Another live holder has the lease."""

    def __init__(self, holder: LeaseInfo, where: str):
        self.holder = holder
        super().__init__(
            f"another nightly run (owner {holder.owner}, started at "
            f"{holder.started_at:%Y-%m-%d %H:%M:%S} UTC, host {holder.host}, pid {holder.pid}) "
            f"holds the lease on {where} until {holder.expires_at:%Y-%m-%d %H:%M:%S} UTC; it "
            "renews the lease while it runs. Try again when it has finished, or, if it died, "
            "once the lease has expired (nightly.lease_ttl_s).")


class LeaseLostError(RuntimeError):
    """The holder's lease was taken over (it did not renew in time)."""


@dataclass(frozen=True)
class LeaseInfo:
    owner: str
    host: str
    pid: int
    generation: int
    started_at: datetime
    expires_at: datetime
    released: bool = False

    def to_bytes(self) -> bytes:
        data = asdict(self)
        data["started_at"] = self.started_at.isoformat()
        data["expires_at"] = self.expires_at.isoformat()
        return json.dumps(data).encode()

    @classmethod
    def from_bytes(cls, raw: bytes) -> LeaseInfo:
        data = json.loads(raw)
        for key in ("started_at", "expires_at"):
            data[key] = datetime.fromisoformat(data[key])
        return cls(**data)

    def stale_reason(self, now: datetime) -> str | None:
        """Why this lease no longer protects anything, or None while it is live."""
        if self.released:
            return "released"
        if now >= self.expires_at:
            return f"expired at {self.expires_at:%H:%M:%S}"
        if self.host == socket.gethostname() and not _process_alive(self.pid):
            return f"its process {self.pid} on this host is gone"
        return None


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


class Lease:
    """The lease on one output; a context manager that acquires, renews and releases it.

    Raises :class:`LeaseHeldError` from ``__enter__`` when another live holder has it.
    """

    def __init__(self, directory: str, storage_options: StorageOptions, *, ttl_s: float,
                 renew_s: float | None = None, settle_s: float = 0.2, what: str = ""):
        self.directory = directory
        self.storage_options = storage_options
        self.ttl_s = ttl_s
        self.renew_s = renew_s if renew_s is not None else ttl_s / 3
        self.settle_s = settle_s
        self.what = what or directory
        self.info: LeaseInfo | None = None
        self.lost = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._fs, self._base = open_fs(directory, storage_options)

    # --- storage --------------------------------------------------------------------------
    def _path(self, generation: int) -> str:
        return str(PurePosixPath(self._base) / f"{generation:012d}.json")

    def _generations(self) -> list[int]:
        try:
            # refresh: s3fs would otherwise answer from its listing cache
            names = self._fs.ls(self._base, detail=False, refresh=True)
        except FileNotFoundError:
            return []
        gens = []
        for name in names:
            stem = PurePosixPath(name).name.removesuffix(".json")
            if stem.isdigit():
                gens.append(int(stem))
        return sorted(gens)

    def _read(self, generation: int) -> LeaseInfo | None:
        try:
            return LeaseInfo.from_bytes(self._fs.cat_file(self._path(generation)))
        except FileNotFoundError:
            return None

    def _create_exclusive(self, info: LeaseInfo) -> bool:
        """Create the generation's object only if absent; False when someone else has."""
        path = self._path(info.generation)
        if is_remote(self.directory):
            try:
                self._fs.pipe_file(path, info.to_bytes(), mode="create")
            except FileExistsError:
                return False
            except OSError:  # a 412 without the condition named: check who is there
                return self._read(info.generation) == info
            return True
        Path(self._base).mkdir(parents=True, exist_ok=True)
        tmp = Path(self._base) / f".{info.owner}.tmp"
        tmp.write_bytes(info.to_bytes())
        try:
            os.link(tmp, path)  # atomic and exclusive: the complete file appears or we lose
        except FileExistsError:
            return False
        finally:
            tmp.unlink(missing_ok=True)
        return True

    def _write_own(self, info: LeaseInfo) -> None:
        path = self._path(info.generation)
        if is_remote(self.directory):
            self._fs.pipe_file(path, info.to_bytes())
            return
        tmp = Path(self._base) / f".{info.owner}.tmp"
        tmp.write_bytes(info.to_bytes())
        os.replace(tmp, path)

    # --- protocol -------------------------------------------------------------------------
    def acquire(self) -> LeaseInfo:
        now = datetime.now(UTC)
        gens = self._generations()
        generation = 1
        if gens:
            current = self._read(gens[-1])
            if current is not None:
                reason = current.stale_reason(now)
                if reason is None:
                    raise LeaseHeldError(current, self.what)
                logger.warning("taking over the lease on %s from owner %s (host %s): %s",
                               self.what, current.owner, current.host, reason)
            generation = gens[-1] + 1
        info = LeaseInfo(owner=uuid.uuid4().hex[:12], host=socket.gethostname(),
                         pid=os.getpid(), generation=generation, started_at=now,
                         expires_at=now + timedelta(seconds=self.ttl_s))
        if not self._create_exclusive(info):
            winner = self._read(generation)
            if winner is None:  # the winner already released it: it ran and finished
                raise LeaseHeldError(replace(info, owner="(just finished)"), self.what)
            raise LeaseHeldError(winner, self.what)
        time.sleep(self.settle_s)
        mine = self._read(generation)
        newer = [g for g in self._generations() if g > generation]
        if mine != info or newer:
            holder = self._read(newer[-1]) if newer else mine
            raise LeaseHeldError(holder or info, self.what)
        for old in (g for g in gens if g < generation):  # keep the store tidy; best effort
            with contextlib.suppress(OSError):
                self._fs.rm_file(self._path(old))
        self.info = info
        logger.info("lease on %s acquired (owner %s, generation %d, ttl %.0f s)",
                    self.what, info.owner, generation, self.ttl_s)
        return info

    def renew(self) -> None:
        """Extend the lease; marks it lost (and raises) when someone has taken it over."""
        if self.info is None:
            raise LeaseLostError("the lease is not held")
        newer = [g for g in self._generations() if g > self.info.generation]
        stored = self._read(self.info.generation)
        if newer or stored is None or stored.owner != self.info.owner:
            self.lost = True
            raise LeaseLostError(f"the lease on {self.what} was taken over while this run held it "
                            "(it did not renew within nightly.lease_ttl_s)")
        self.info = replace(self.info, expires_at=datetime.now(UTC) + timedelta(
            seconds=self.ttl_s))
        self._write_own(self.info)

    def release(self) -> None:
        if self.info is None:
            return
        if not self.lost:
            try:
                stored = self._read(self.info.generation)
                if stored is not None and stored.owner == self.info.owner:
                    self._fs.rm_file(self._path(self.info.generation))
            except FileNotFoundError:
                pass
            except (OSError, BotoCoreError) as exc:
                # The store went away (often what ends the run): the run's own error must
                # not be replaced by this one.  The lease lapses at its expiry, or at once
                # for a next run on this host (this process will be gone).
                logger.warning("could not release the lease on %s (%s); it lapses at "
                               "%s UTC", self.what, exc, f"{self.info.expires_at:%H:%M:%S}")
                self.info = None
                return
        logger.info("lease on %s released (owner %s)", self.what, self.info.owner)
        self.info = None

    def check(self) -> None:
        """Raise :class:`LeaseLostError` when the lease was taken over during the run."""
        if self.lost:
            raise LeaseLostError(f"the lease on {self.what} was taken over during this run")

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.renew_s):
            try:
                self.renew()
            except LeaseLostError as exc:
                logger.error("%s", exc)
                return
            except (OSError, BotoCoreError) as exc:  # a storage hiccup: the next may succeed
                logger.warning("could not renew the lease on %s: %s", self.what, exc)

    def __enter__(self) -> Lease:
        self.acquire()
        self._thread = threading.Thread(target=self._renew_loop, name="lease-renew",
                                        daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.release()


def lease_dir(out: str) -> str:
    return join(out, "_state", "lease")
