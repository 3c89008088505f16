"""Fail fast and say why: bounded checks, before any data moves, of what a job needs.

Each job command (``emoray run``, ``nightly``, ``train``, ``submit``) checks first, each
probe within ``preflight.timeout_s``:

* **output**: a marker object is created and deleted there, as the job's writes and deletes
  will be (a missing local folder is created for the test and removed again; a missing S3
  bucket is reported, not created);
* **input**: it exists and can be listed (on S3 one LIST request for one key);
* **storage**: the S3 endpoint answers and accepts the credentials (through the two above);
* **tracking**: an MLflow server answers ``GET <uri>/health``; a sqlite or file store's
  folder is writable; a database store's port accepts a connection;
* **Ray**: the cluster's address (GCS ``host:port`` or Ray Client ``ray://host:port``)
  accepts a TCP connection; for ``emoray submit`` the dashboard answers ``GET /api/version``.

The checks run at once, so the preflight takes as long as its slowest probe, never more
than ``timeout_s``.  Each problem is one line naming the thing, its URI and the cause, and
the command exits with the code of the first problem's class (:class:`ExitCode`).
"""

from __future__ import annotations

import logging
import socket
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from urllib.parse import urlsplit

from botocore import exceptions as boto_errors
from pydantic import BaseModel, ConfigDict, Field

from infra.ray_cluster import resolve_address
from infra.storage import StorageConfig
from infra.tracking import TrackingConfig
from operators.io.files import is_remote, open_fs, protocol_of

logger = logging.getLogger(__name__)

# What a storage call raises when the store fails: s3fs turns S3's error answers into OSError
# subclasses, but connection failures and timeouts arrive as botocore's own exceptions.
STORAGE_ERRORS: tuple[type[Exception], ...] = (OSError, boto_errors.BotoCoreError)

TRACKING_HINT = "to run without tracking: --set tracking.enabled=false"


class ExitCode(IntEnum):
    """Exit codes of the ``emoray`` commands, one per class of failure (README "Exit codes")."""

    OK = 0
    FAILED = 1  # anything not classed below: a bug or an unexpected fault (see --debug)
    BAD_INPUT = 2  # input missing or not listable, bad config, model file missing
    LEASE_HELD = 3  # nightly: another run holds the output's lease
    OUTPUT = 4  # output not writable, or it stopped being writable during the run (or lost)
    STORAGE = 5  # object storage does not answer, or has no or rejects the credentials
    TRACKING = 6  # MLflow does not answer, or its store is not writable
    RAY = 7  # the Ray cluster (or its dashboard) does not answer


class PreflightConfig(BaseModel):
    """The checks a job makes before it starts (see module doc)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = True
    # The longest any one probe may take.  A store, server or cluster that is up answers in
    # milliseconds; 10 s rides out a loaded link without making a dead one cost minutes.
    timeout_s: float = Field(10.0, gt=0)


@dataclass(frozen=True)
class Problem:
    """One thing a job cannot use: its class (the exit code) and the one-line message."""

    code: ExitCode
    message: str


class JobError(RuntimeError):
    """A failure that ends a command with one line per problem and ``code`` (no traceback
    unless ``--debug``)."""

    def __init__(self, code: ExitCode, lines: Sequence[str]):
        super().__init__("; ".join(lines))
        self.code = code
        self.lines = tuple(lines)


class PreflightError(JobError):
    """The preflight found problems; the exit code is the first one's."""

    def __init__(self, problems: Sequence[Problem]):
        super().__init__(problems[0].code, [p.message for p in problems])
        self.problems = tuple(problems)


@dataclass(frozen=True)
class Check:
    """One bounded probe.  ``probe`` returns None when all is well; when it does not return
    within the preflight's timeout the problem is ``subject: no answer within N s`` and
    ``hint``, of class ``code``."""

    subject: str
    code: ExitCode
    probe: Callable[[], Problem | None]
    hint: str = ""


def find_problems(checks: Iterable[Check], timeout_s: float) -> list[Problem]:
    """Run ``checks`` at once, each in a daemon thread, and return their problems in the
    checks' order, after at most ``timeout_s`` (a probe still running then is abandoned)."""
    checks = list(checks)
    results: dict[int, Problem | None] = {}

    def run(index: int, check: Check) -> None:
        try:
            results[index] = check.probe()
        except Exception as exc:  # a probe that breaks: that is the finding
            results[index] = Problem(check.code, f"{check.subject}: {type(exc).__name__}: "
                                                 f"{_first_line(exc)}")

    threads = [threading.Thread(target=run, args=(i, c), name=f"preflight-{i}", daemon=True)
               for i, c in enumerate(checks)]
    deadline = time.monotonic() + timeout_s
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    problems = []
    for index, check in enumerate(checks):
        if index not in results:
            problems.append(Problem(check.code, f"{check.subject}: no answer within "
                                                f"{timeout_s:g} s{check.hint}"))
        elif results[index] is not None:
            problems.append(results[index])
    return problems


def run_checks(checks: Iterable[Check], config: PreflightConfig) -> None:
    """The preflight: raises :class:`PreflightError` naming every problem found."""
    checks = list(checks)
    if not config.enabled or not checks:
        return
    started = time.monotonic()
    problems = find_problems(checks, config.timeout_s)
    if problems:
        raise PreflightError(problems)
    logger.info("preflight: %d check(s) passed in %.1f s", len(checks),
                time.monotonic() - started)


def check_job(config: PreflightConfig, storage: StorageConfig, *, inputs: Sequence[str] = (),
              output: str | None = None, tracking: TrackingConfig | None = None,
              address: str | None = None, write_output: bool = True) -> None:
    """The usual preflight of a job: ``inputs`` listable, ``output`` writable (or, without
    ``write_output``, readable), ``tracking`` reachable (None: not used), the Ray cluster at
    ``address`` (or ``$RAY_ADDRESS``) reachable.  Raises :class:`PreflightError`."""
    timeout = config.timeout_s
    checks = [check_input(uri, storage, timeout) for uri in inputs]
    if output is not None:
        checks.append(check_output(output, storage, timeout, write=write_output))
    if tracking is not None:
        checks.append(check_tracking(tracking, timeout))
    ray_check = check_ray(address, timeout)
    if ray_check is not None:
        checks.append(ray_check)
    run_checks(checks, config)


# --- storage -------------------------------------------------------------------------------
_CREDENTIAL_CODES = frozenset({
    "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken",
    "TokenRefreshRequired", "InvalidClientTokenId", "UnrecognizedClientException"})
_DENIED_CODES = frozenset({"AccessDenied", "AllAccessDisabled", "AccountProblem", "403"})
_GLOB_CHARS = "*?["


def _probe_storage(storage: StorageConfig, timeout_s: float) -> StorageConfig:
    """``storage`` with the probe's bounds: one retry (a single dropped packet is not an
    outage), each attempt within ``timeout_s``."""
    return storage.model_copy(update={"connect_timeout_s": timeout_s,
                                      "read_timeout_s": timeout_s, "max_attempts": 2})


def endpoint_of(storage: StorageConfig, uri: str) -> str:
    """The endpoint URL requests for ``uri`` go to, for messages."""
    options = storage.storage_options().get(protocol_of(uri), {})
    endpoint = options.get("client_kwargs", {}).get("endpoint_url")
    return endpoint or f"the {protocol_of(uri)} endpoint"


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    while exc is not None and exc not in seen:
        seen.append(exc)
        exc = exc.__cause__ or exc.__context__
    return seen


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else "no message"


def _socket_detail(chain: list[BaseException]) -> str:
    if any(isinstance(e, ConnectionRefusedError) for e in chain):
        return " (connection refused)"
    if any(isinstance(e, TimeoutError | boto_errors.ConnectTimeoutError) for e in chain):
        return " (timed out)"
    if any(isinstance(e, socket.gaierror) for e in chain):
        return " (unknown host)"
    return ""


def storage_cause(exc: BaseException, uri: str, endpoint: str) -> tuple[ExitCode | None, str]:
    """Why a storage call on ``uri`` failed, in words.  The class is
    :attr:`ExitCode.STORAGE` when the store itself cannot be used (no connection, no answer,
    credentials missing or rejected), None when the store answered about this location
    (missing bucket, access denied, a file in the way): the caller classes those."""
    chain = _chain(exc)
    for err in chain:
        if isinstance(err, boto_errors.NoCredentialsError | boto_errors.PartialCredentialsError
                      | boto_errors.CredentialRetrievalError):
            return ExitCode.STORAGE, ("no S3 credentials found (AWS_ACCESS_KEY_ID and "
                                      "AWS_SECRET_ACCESS_KEY, AWS_PROFILE, …)")
        if isinstance(err, boto_errors.ClientError):
            error = err.response.get("Error", {})
            code, message = str(error.get("Code", "?")), error.get("Message") or ""
            detail = f"{code}: {message}" if message else code
            if code in _CREDENTIAL_CODES:
                return ExitCode.STORAGE, f"{endpoint} rejected the credentials ({detail})"
            if code == "NoSuchBucket":
                return None, f"bucket {urlsplit(uri).netloc!r} does not exist"
            if code in _DENIED_CODES:
                return None, f"access denied ({detail})"
            return None, detail
        if isinstance(err, boto_errors.ReadTimeoutError):
            return ExitCode.STORAGE, f"{endpoint} did not answer in time"
        if isinstance(err, boto_errors.ConnectionError | ConnectionError | TimeoutError):
            return ExitCode.STORAGE, f"could not connect to {endpoint}{_socket_detail(chain)}"
    if isinstance(exc, FileExistsError | NotADirectoryError):
        return None, "a file is in the way (the path or a folder above it is a file)"
    if isinstance(exc, PermissionError):
        return None, "permission denied"
    if isinstance(exc, FileNotFoundError):
        return None, "no such file or folder"
    return None, f"{type(exc).__name__}: {_first_line(exc)}"


def check_writable_folder(folder: Path) -> None:
    """Create ``folder`` if missing, write and delete a marker file in it, and remove the
    folders this created; raises ``OSError`` where that fails."""
    created = []
    parent = folder
    while not parent.exists() and parent != parent.parent:
        created.append(parent)  # deepest first
        parent = parent.parent
    folder.mkdir(parents=True, exist_ok=True)
    try:
        marker = folder / f".emoray-preflight-{uuid.uuid4().hex}"
        marker.write_bytes(b"")
        marker.unlink()
    finally:
        for path in created:
            try:
                path.rmdir()
            except OSError:  # something else wrote there meanwhile: leave it
                break


def _has_objects(uri: str, storage: StorageConfig) -> bool:
    """Whether anything exists at ``uri`` (an object or a prefix), in one request on S3 (a
    LIST, whose errors name their cause; a HEAD's 403 has no body to say why)."""
    fs, path = open_fs(uri, storage.storage_options())
    if protocol_of(uri) in ("s3", "s3a"):
        bucket, key, _ = fs.split_path(path)
        listing = fs.call_s3("list_objects_v2", Bucket=bucket, Prefix=key, MaxKeys=1)
        return bool(listing.get("KeyCount") or listing.get("Contents"))
    return fs.exists(path)


def check_output(out: str, storage: StorageConfig, timeout_s: float, *,
                 write: bool = True) -> Check:
    """The output ``out`` (local folder or object-store prefix) can be written and deleted
    in (``write``), or read (a dry run changes nothing)."""
    subject = f"cannot write to {out}" if write else f"cannot read {out}"
    probe_storage = _probe_storage(storage, timeout_s)
    endpoint = endpoint_of(storage, out)

    def probe() -> Problem | None:
        try:
            if not is_remote(out):
                folder = Path(out)
                if write:
                    check_writable_folder(folder)
                elif folder.exists() and not folder.is_dir():
                    raise NotADirectoryError(out)
                return None
            if not write:
                _has_objects(out, probe_storage)
                return None
            fs, path = open_fs(out, probe_storage.storage_options())
            marker = f"{path.rstrip('/')}/.emoray-preflight-{uuid.uuid4().hex}"
            fs.pipe_file(marker, b"")
            fs.rm_file(marker)
        except STORAGE_ERRORS as exc:
            code, cause = storage_cause(exc, out, endpoint)
            return Problem(code or ExitCode.OUTPUT, f"{subject}: {cause}")
        return None

    return Check(subject, ExitCode.STORAGE if is_remote(out) else ExitCode.OUTPUT, probe)


def check_input(spec: str, storage: StorageConfig, timeout_s: float) -> Check:
    """The input ``spec`` (file, folder, glob, prefix or manifest) exists and its store
    answers; what it holds is for the job's own listing."""
    missing = f"input {spec!r} does not exist or cannot be listed"
    subject = f"cannot list input {spec!r}"
    probe_storage = _probe_storage(storage, timeout_s)
    # A glob is probed at its fixed part: the folder or prefix it searches.
    cut = min((i for i, ch in enumerate(spec) if ch in _GLOB_CHARS), default=None)
    base = spec if cut is None else spec[:cut].rsplit("/", 1)[0] or "/"

    def probe() -> Problem | None:
        try:
            if not is_remote(base):
                found = Path(base).exists()
            else:
                found = _has_objects(base, probe_storage)
        except STORAGE_ERRORS as exc:
            code, cause = storage_cause(exc, base, endpoint_of(storage, base))
            return Problem(code or ExitCode.BAD_INPUT, f"{subject}: {cause}")
        return None if found else Problem(ExitCode.BAD_INPUT, missing)

    return Check(subject, ExitCode.STORAGE if is_remote(spec) else ExitCode.BAD_INPUT, probe)


# --- tracking -------------------------------------------------------------------------------
_DATABASE_PORTS = {"postgresql": 5432, "mysql": 3306, "mssql": 1433}


def check_tracking(tracking: TrackingConfig, timeout_s: float) -> Check:
    """MLflow answers: a server's ``/health`` within ``timeout_s`` (plain HTTP, so none of
    MLflow's own retries), a sqlite or file store's folder is writable, a database's port
    accepts a connection."""
    uri = tracking.resolved_uri()
    hint = f"; {TRACKING_HINT}" if tracking.enabled else ""
    subject = f"cannot reach MLflow tracking at {uri}"
    scheme = urlsplit(uri).scheme.lower()

    def probe() -> Problem | None:
        if scheme in ("http", "https"):
            cause = _http_unanswered(f"{uri.rstrip('/')}/health", timeout_s)
            return None if cause is None else Problem(ExitCode.TRACKING,
                                                      f"{subject}: {cause}{hint}")
        if scheme in ("sqlite", "file", ""):
            folder = _store_folder(uri, scheme)
            if folder is None:
                return None
            try:
                check_writable_folder(folder)
            except OSError as exc:
                _, cause = storage_cause(exc, uri, uri)
                return Problem(ExitCode.TRACKING,
                               f"cannot write to the MLflow store {uri}: {cause}{hint}")
            return None
        parts = urlsplit(uri)
        port = parts.port or _DATABASE_PORTS.get(scheme.split("+")[0])
        if parts.hostname is None or port is None:
            return None  # a hosted store (databricks, …): nothing to probe here
        cause = _tcp_unanswered(parts.hostname, port, timeout_s)
        return None if cause is None else Problem(ExitCode.TRACKING, f"{subject}: {cause}{hint}")

    return Check(subject, ExitCode.TRACKING, probe, hint)


def _store_folder(uri: str, scheme: str) -> Path | None:
    """The folder a local MLflow store writes to (None: an in-memory database)."""
    if scheme == "sqlite":
        path = uri[len("sqlite:///"):] if uri.startswith("sqlite:///") else ""
        return Path(path).parent if path and path != ":memory:" else None
    if scheme == "file":
        return Path(urlsplit(uri).path)
    return Path(uri)


# --- Ray ---------------------------------------------------------------------------------------
_RAY_GCS_PORT, _RAY_CLIENT_PORT = 6379, 10001


def check_ray(address: str | None, timeout_s: float) -> Check | None:
    """The Ray cluster the job joins (``address``, else ``$RAY_ADDRESS``) accepts a TCP
    connection on its GCS or Ray Client port.  None when there is nothing to probe: a local
    Ray is started, or ``auto`` (Ray finds the address itself, and says so at once when
    there is none)."""
    address = resolve_address(address)
    if address is None or address in ("auto", "local"):
        return None
    parts = urlsplit(address if "://" in address else f"//{address}")
    default = _RAY_CLIENT_PORT if parts.scheme == "ray" else _RAY_GCS_PORT
    host, port = parts.hostname, parts.port or default
    subject = f"cannot reach the Ray cluster at {address}"

    def probe() -> Problem | None:
        if host is None:
            return Problem(ExitCode.BAD_INPUT, f"Ray address {address!r} names no host")
        cause = _tcp_unanswered(host, port, timeout_s)
        return None if cause is None else Problem(ExitCode.RAY, f"{subject}: {cause}")

    return Check(subject, ExitCode.RAY, probe)


def check_dashboard(url: str, timeout_s: float) -> Check:
    """The Ray dashboard (Jobs API) at ``url`` answers ``GET /api/version`` (a ``ray://``
    address: its port accepts a connection; ``auto``: nothing to probe)."""
    if "://" not in url and url != "auto":
        url = f"http://{url}"
    parts = urlsplit(url)
    subject = f"cannot reach the Ray dashboard at {url}"

    def probe() -> Problem | None:
        if parts.scheme in ("http", "https"):
            cause = _http_unanswered(f"{url.rstrip('/')}/api/version", timeout_s)
        elif parts.hostname is not None:
            cause = _tcp_unanswered(parts.hostname, parts.port or _RAY_CLIENT_PORT, timeout_s)
        else:
            return None
        return None if cause is None else Problem(ExitCode.RAY, f"{subject}: {cause}")

    return Check(subject, ExitCode.RAY, probe)


# --- sockets ---------------------------------------------------------------------------------
def _tcp_unanswered(host: str, port: int, timeout_s: float) -> str | None:
    """Why ``host:port`` accepts no TCP connection within ``timeout_s``, or None."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return None
    except ConnectionRefusedError:
        return f"connection refused (nothing listens on {host}:{port})"
    except TimeoutError:
        return f"no answer from {host}:{port} within {timeout_s:g} s"
    except socket.gaierror as exc:
        return f"unknown host {host!r} ({exc.strerror})"
    except OSError as exc:
        return f"could not connect to {host}:{port} ({exc.strerror or exc})"


def _http_unanswered(url: str, timeout_s: float) -> str | None:
    """Why ``url`` gives no HTTP answer within ``timeout_s`` (or answers with a server
    error), or None.  A 4xx is an answer: the server is there."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s):
            return None
    except urllib.error.HTTPError as exc:
        return None if exc.code < 500 else f"it answered HTTP {exc.code} {exc.reason}"
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, ConnectionRefusedError):
            return "connection refused"
        if isinstance(reason, TimeoutError):
            return f"no answer within {timeout_s:g} s"
        return f"could not connect ({reason})"
    except TimeoutError:
        return f"no answer within {timeout_s:g} s"
    except OSError as exc:
        return f"could not connect ({exc})"

