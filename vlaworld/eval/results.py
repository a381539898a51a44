"""The durable results store of a run directory (SPEC §8): what survives a killed or resumed run.

``RUN_DIR/episodes.jsonl`` holds one JSON object per finished episode, each line flushed and fsync'd
before the next episode counts as done, so a crash loses at most the episodes in flight and at worst
leaves a torn last line, which the reader reports and skips (and the writer cuts off before
appending). Episode identity is (suite, task_id, episode); a repeated identity keeps its first
record. ``run.json`` pins the resolved configuration, and ``check_resume`` refuses to continue a run
whose configuration changed, listing the fields. Episodes with ``error`` set are counted apart and
never enter a success rate (``summary``): an infrastructure fault is not a policy failure.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from vlaworld.errors import VlaworldError


EPISODES_FILE = "episodes.jsonl"
RUN_FILE = "run.json"
SUMMARY_JSON = "summary.json"
SUMMARY_MD = "summary.md"

# name -> accepted JSON types (bool is excluded from int on purpose: True is not an episode index)
_FIELDS: dict[str, tuple[type, ...]] = {
    "suite": (str,),
    "task_id": (int,),
    "task": (str,),
    "episode": (int,),
    "seed": (int,),
    "init_state": (int,),
    "success": (bool,),
    "steps": (int,),
    "wall_s": (int, float),
    "error": (str, type(None)),
}
EPISODE_FIELDS = tuple(_FIELDS)

EpisodeKey = tuple[str, int, int]
# ``error_kind`` of a record whose ``error`` is set: the policy produced non-finite actions (its episode was
# stopped unstepped, and is not re-run on resume), or the infrastructure failed (a worker crashed or hung;
# re-run on resume). Neither is ever scored as a success or a failure.
POLICY_ERROR = "policy"
INFRASTRUCTURE_ERROR = "infrastructure"


class ResultsFormatError(VlaworldError, ValueError):
    """A results file does not follow the schema of SPEC §8."""


class ConfigChanged(VlaworldError, RuntimeError):
    """Resuming a run directory with a configuration that differs from the one it was started with."""


@dataclass(frozen=True, kw_only=True)
class EpisodeRecord:
    """One finished episode, as stored in one line of ``episodes.jsonl``."""

    suite: str
    task_id: int
    task: str
    episode: int
    seed: int
    init_state: int
    success: bool
    steps: int
    wall_s: float
    error: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)  # e.g. memory stats; stored at top level

    def __post_init__(self) -> None:
        for name, types in _FIELDS.items():
            value = getattr(self, name)
            if type(value).__module__ == "numpy" and hasattr(value, "item"):  # np.bool_, np.int64 from envs
                value = value.item()
                object.__setattr__(self, name, value)
            if (isinstance(value, bool) and bool not in types) or not isinstance(value, types):
                want = " or ".join("null" if t is type(None) else t.__name__ for t in types)
                raise ResultsFormatError(f"field {name!r} must be {want}, got {value!r}")

    @property
    def key(self) -> EpisodeKey:
        return (self.suite, self.task_id, self.episode)

    def to_json(self) -> dict[str, Any]:
        clash = set(self.extra) & set(_FIELDS)
        if clash:
            raise ValueError(f"extra fields {sorted(clash)} shadow schema fields; rename them")
        row = {name: getattr(self, name) for name in _FIELDS}
        row.update(self.extra)
        return row

    @classmethod
    def from_json(cls, row: Mapping[str, Any], *, where: str = "record") -> EpisodeRecord:
        """Validate one decoded line; ``where`` (file:line) goes into the error message."""
        missing = [name for name in _FIELDS if name not in row]
        if missing:
            raise ResultsFormatError(f"{where}: missing field(s) {missing}; required: {list(_FIELDS)}")
        extra = {k: v for k, v in row.items() if k not in _FIELDS}
        try:
            return cls(**{name: row[name] for name in _FIELDS}, extra=extra)
        except ResultsFormatError as exc:
            raise ResultsFormatError(f"{where}: {exc}") from exc


@dataclass(frozen=True, kw_only=True)
class EpisodeLog:
    """The readable content of an episodes file, and what was skipped to get it."""

    path: Path
    records: tuple[EpisodeRecord, ...]  # first record of each identity, in file order
    torn_tail: str | None = None  # the unparseable last line of a killed run, skipped
    duplicates: int = 0  # later records of an identity already seen, dropped
    conflicting: tuple[EpisodeKey, ...] = ()  # identities whose duplicates disagree on success

    def notes(self) -> list[str]:
        """Human-readable remarks for reports; empty when the file was clean."""
        out = []
        if self.torn_tail is not None:
            out.append(f"{self.path}: skipped a torn last line (killed run): {self.torn_tail[:80]!r}")
        if self.duplicates:
            out.append(f"{self.path}: dropped {self.duplicates} duplicate episode record(s), kept the first")
        if self.conflicting:
            out.append(f"{self.path}: duplicates disagree on success for {list(self.conflicting)[:5]}")
        return out


def episodes_path(path: str | os.PathLike) -> Path:
    """A ``*.jsonl`` path is the episodes file itself (e.g. one rank's shard); anything else a run directory."""
    path = Path(path)
    return path if path.suffix == ".jsonl" else path / EPISODES_FILE


class _NotJSON(ResultsFormatError):
    """A line that does not decode: what a write cut short by a kill leaves behind."""


def _parse_line(raw: bytes, where: str) -> EpisodeRecord:
    try:
        row = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise _NotJSON(f"{where}: not valid JSON ({exc})") from exc
    if not isinstance(row, dict):
        raise ResultsFormatError(f"{where}: expected a JSON object, got {type(row).__name__}")
    return EpisodeRecord.from_json(row, where=where)


def read_episodes(path: str | os.PathLike) -> EpisodeLog:
    """Read a run directory's episodes file (or a ``*.jsonl`` file), skipping a torn last line.

    One record per episode: the first one, except that an ``error`` record (an infrastructure failure)
    gives way to a later complete one, which is how a resumed run retries failed episodes.
    """
    path = episodes_path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no episodes file at {path}; pass a run directory made by `python -m vlaworld.eval`")
    data = path.read_bytes()
    lines = data.split(b"\n")
    if lines[-1] == b"":  # the file ends in a newline
        lines.pop()
    torn: str | None = None
    first: dict[EpisodeKey, EpisodeRecord] = {}
    duplicates = 0
    conflicting: dict[EpisodeKey, None] = {}
    for lineno, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            record = _parse_line(raw, f"{path}:{lineno}")
        except _NotJSON as exc:
            if lineno == len(lines) and not data.endswith(b"\n"):  # a write cut short: the writer cuts it too
                torn = raw.decode("utf-8", errors="replace")
                break
            raise ResultsFormatError(
                f"{exc}. Only an unfinished last line (no newline: a killed write) is skipped; this one is garbage. "
                f"Look at it, then delete it with: sed -i '{lineno}d' {path}"
            ) from exc
        kept = first.setdefault(record.key, record)
        if kept is not record:
            duplicates += 1
            if kept.error is not None and record.error is None:
                first[record.key] = record  # a resumed run re-ran an episode whose workers had failed
            elif kept.success != record.success or (kept.error is None) != (record.error is None):
                conflicting[record.key] = None
    log = EpisodeLog(path=path, records=tuple(first.values()), torn_tail=torn,
                     duplicates=duplicates, conflicting=tuple(conflicting))
    for note in log.notes():
        warnings.warn(note, stacklevel=2)
    return log


class EpisodeWriter:
    """Append-only writer: each record is one line, flushed and fsync'd before ``append`` returns.

    Opening cuts off a torn last line left by a killed run (it cannot be parsed, and appending after
    it would bury it mid-file); ``dropped_tail`` keeps its text for the caller to report.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = path = episodes_path(path)
        self.dropped_tail: str | None = None
        created = not path.exists()
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file: IO[bytes] = open(path, "ab")  # noqa: SIM115 - closed in close()
        self._cut_torn_tail()
        if created:
            _fsync_dir(path.parent)

    def _cut_torn_tail(self) -> None:
        data = self.path.read_bytes()
        if not data or data.endswith(b"\n"):
            return
        keep = data.rfind(b"\n") + 1
        try:
            _parse_line(data[keep:], str(self.path))
        except ResultsFormatError:
            self.dropped_tail = data[keep:].decode("utf-8", errors="replace")
            self._file.truncate(keep)
        else:
            self._file.write(b"\n")  # only the newline was lost: keep the record
        self._file.flush()
        os.fsync(self._file.fileno())
        if self.dropped_tail is not None:
            warnings.warn(f"{self.path}: removed a torn last line before appending: {self.dropped_tail[:80]!r}",
                          stacklevel=3)

    def append(self, record: EpisodeRecord) -> None:
        line = json.dumps(record.to_json(), allow_nan=False, ensure_ascii=False, default=_plain) + "\n"
        self._file.write(line.encode("utf-8"))
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> EpisodeWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _plain(value: Any) -> Any:
    """JSON fallback for numpy scalars and arrays in extra fields (memory stats), without importing numpy."""
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} in an episode record is not JSON serializable; convert it first")


def _fsync_dir(directory: Path) -> None:
    """Make a new file's directory entry durable (POSIX); a no-op where directories cannot be opened."""
    if os.name != "posix":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomic(path: Path, text: str) -> None:
    """Write via a temporary file and rename, so readers never see half a JSON document.

    The temporary name is per process: concurrent ranks of a sharded run write the same files.
    """
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a full or read-only disk leaves no *.tmp behind
        raise


# ---------------------------------------------------------------- run.json


@dataclass(frozen=True, kw_only=True)
class RunInfo:
    """Provenance of a run: what must not change when it is resumed, and what produced it."""

    config: Mapping[str, Any]  # the resolved configuration (every outcome-affecting field)
    checkpoint_hash: str | None = None
    versions: Mapping[str, str] = field(default_factory=dict)  # python, torch, vlaworld, ...
    sim_stack: Mapping[str, str] = field(default_factory=dict)  # libero, robosuite, mujoco, renderer
    extra: Mapping[str, Any] = field(default_factory=dict)  # anything else (host, GPU, start time)


def write_run_info(run_dir: str | os.PathLike, info: RunInfo) -> Path:
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    doc = {"config": info.config, "checkpoint_hash": info.checkpoint_hash,
           "versions": info.versions, "sim_stack": info.sim_stack, **info.extra}
    path = run_dir / RUN_FILE
    _write_atomic(path, json.dumps(doc, indent=2, sort_keys=True, allow_nan=False) + "\n")
    return path


def read_run_info(run_dir: str | os.PathLike) -> RunInfo | None:
    """The run's ``run.json``, or None when the directory has none (e.g. runs from other tools)."""
    path = Path(run_dir) / RUN_FILE
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ResultsFormatError(f"{path} is not valid JSON ({exc}); it records how the run was started. "
                                 "Restore it, or start over in a new --out directory.") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("config"), dict):
        raise ResultsFormatError(f"{path}: expected an object with a 'config' object")
    known = ("config", "checkpoint_hash", "versions", "sim_stack")
    return RunInfo(config=doc["config"], checkpoint_hash=doc.get("checkpoint_hash"),
                   versions=doc.get("versions") or {}, sim_stack=doc.get("sim_stack") or {},
                   extra={k: v for k, v in doc.items() if k not in known})


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: value}


def config_diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """Lines ``field: old -> new`` for every (dotted) field that differs, after a JSON round trip."""
    a = _flatten(json.loads(json.dumps(old)))
    b = _flatten(json.loads(json.dumps(new)))
    missing = object()
    lines = []
    for name in sorted(set(a) | set(b)):
        x, y = a.get(name, missing), b.get(name, missing)
        if x != y:
            show = lambda v: "(absent)" if v is missing else json.dumps(v)  # noqa: E731
            lines.append(f"{name}: {show(x)} -> {show(y)}")
    return lines


def check_resume(
    run_dir: str | os.PathLike,
    config: Mapping[str, Any],
    *,
    checkpoint_hash: str | None = None,
    sim_stack: Mapping[str, str] | None = None,
    ignore: Iterable[str] = (),
) -> RunInfo | None:
    """Allow resuming ``run_dir`` only with the configuration it was started with.

    Returns the stored RunInfo (None for a fresh directory). Raises ConfigChanged listing every
    changed field; ``ignore`` names dotted fields allowed to differ (e.g. ``n_envs``). The checkpoint
    hash and simulator stack are compared too when given.
    """
    stored = read_run_info(run_dir)
    if stored is None:
        if episodes_path(run_dir).exists():
            raise ConfigChanged(
                f"{Path(run_dir)} holds episodes but no {RUN_FILE}, so its configuration cannot be checked; "
                "use a new --out directory (or restore run.json)."
            )
        return None
    old: dict[str, Any] = {"config": stored.config}
    new: dict[str, Any] = {"config": config}
    if checkpoint_hash is not None:
        old["checkpoint_hash"], new["checkpoint_hash"] = stored.checkpoint_hash, checkpoint_hash
    if sim_stack is not None:
        old["sim_stack"], new["sim_stack"] = stored.sim_stack, sim_stack
    skip = {f"config.{name}" for name in ignore} | set(ignore)
    diff = [line for line in config_diff(old, new) if line.split(":", 1)[0] not in skip]
    if diff:
        raise ConfigChanged(
            f"{Path(run_dir)} was started with a different configuration; resuming would mix "
            "results of two setups. Changed:\n  " + "\n  ".join(diff)
            + "\nUse a new --out directory, or rerun with the original settings."
        )
    return stored
