"""Atomic file writes, run-folder locks and output checks: nothing half-written survives a crash."""
from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import math
import os
import shutil
import signal
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Literal, Union

from wsol.errors import ConfigError, WsolError

PathLike = Union[str, "os.PathLike[str]"]

LOCK_NAME = ".lock"


def _unique_key_loader() -> type:
    """A SafeLoader that refuses a key given twice in one mapping (``models:`` twice, ``checkpoint:`` twice): plain
    YAML keeps the last one silently, so a study would drop the first list of models. Merge keys (``<<``) may override."""
    import yaml

    class UniqueKeyLoader(yaml.SafeLoader):
        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            seen: dict = {}
            for key_node, _ in node.value if isinstance(node, yaml.MappingNode) else []:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    if key in seen:
                        raise yaml.constructor.ConstructorError(None, None, f"the key {key!r} of line {seen[key]} is given again",
                                                                key_node.start_mark)
                    seen[key] = key_node.start_mark.line + 1
                except TypeError:  # an unhashable key: the base class names it
                    continue
            return super().construct_mapping(node, deep)

    return UniqueKeyLoader


def read_yaml(path: PathLike, what: str) -> Any:
    """The parsed YAML document of text file ``path`` (``what`` names it in errors, e.g. "study file"): a file that is
    not UTF-8 text or not valid YAML (a key given twice included) is one ConfigError naming the line and column, not a traceback."""
    import yaml

    try:
        return yaml.load(Path(path).read_text(encoding="utf-8"), Loader=_unique_key_loader())
    except UnicodeDecodeError:
        raise ConfigError(f"{what} {path} is not a UTF-8 text file; pass a YAML file") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"{what} {path} is not valid YAML: {problem}{where}") from None


def current_umask() -> int:
    """The process umask (reading it means setting it; it is restored at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_replaces = 0


def _test_kill_hook() -> None:
    """Test hook for crash-consistency tests: with ``WSOL_TEST_KILL_BEFORE_REPLACE=K`` the process
    SIGKILLs itself just before its K-th atomic replace. Unset (always, outside tests) it does nothing."""
    global _replaces
    k = os.environ.get("WSOL_TEST_KILL_BEFORE_REPLACE")
    if not k:
        return
    _replaces += 1
    if _replaces == int(k):
        os.kill(os.getpid(), signal.SIGKILL)


def _remove_stale_temps(target: Path) -> None:
    """Delete ``.<name>.*.tmp`` files beside ``target`` that an earlier, killed write left behind."""
    for stale in target.parent.glob(f".{target.name}.*.tmp"):
        try:
            stale.unlink()
        except FileNotFoundError:
            pass


def _pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists (one of another user counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def temp_dir_beside(target: PathLike, suffix: str = ".tmp") -> Path:
    """A new empty folder ``.<name>.<pid>.<random><suffix>`` beside ``target``, for building a tree that is
    then renamed into place.

    Such folders of ``target`` (of any suffix) left by a killed process (a SIGKILL skips every cleanup)
    are removed first: their pid is in the name, and only those of processes that no longer exist go,
    so a concurrent writer's folder is left alone. Without this, each killed run would leave a whole
    half-written tree behind.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    for stale in target.parent.glob(f".{target.name}.*"):
        pid = stale.name[len(target.name) + 2:].split(".", 1)[0]
        if stale.is_dir() and pid.isdigit() and not _pid_alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f".{target.name}.{os.getpid()}.", suffix=suffix, dir=target.parent))


def remove_folder(path: PathLike) -> None:
    """Delete folder ``path`` (nothing if it is missing) so that no half-deleted tree stays under its name: it is
    renamed aside first, then removed; a kill mid-removal leaves only the renamed folder, which
    :func:`temp_dir_beside` deletes later."""
    target = Path(path)
    if not target.is_dir():
        return
    aside = temp_dir_beside(target, ".removed")
    os.replace(target, aside)  # onto the empty folder temp_dir_beside made
    shutil.rmtree(aside, ignore_errors=True)


def file_sha256(path: PathLike) -> str:
    """SHA-256 of a file's bytes, read in blocks (checkpoints can be large)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` only if the block succeeds.

    The file gets the mode a plain ``open`` would give (0o666 less the umask), and temp files of
    the same output left by a killed earlier write are removed first.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(target)
    mode = 0o666 & ~current_umask()
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.fchmod(fd, mode)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, mode)  # writers that re-create the file (safetensors: 0o600) lose the mode set above
        _test_kill_hook()
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_bytes(path: PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temp file + fsync + rename)."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())


def atomic_write_text(path: PathLike, text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def _undefined_as_null(obj: Any) -> Any:
    """``obj`` with every float that is NaN or infinite replaced by None, in nested dicts, lists and tuples."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _undefined_as_null(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_undefined_as_null(v) for v in obj]
    return obj


def json_text(obj: Any, indent: int | None = None) -> str:
    """``obj`` as standard JSON text, the one spelling of every JSON file wsol writes: an undefined number (NaN, an
    infinity) is ``null``. Python's ``json`` would write the tokens ``NaN``/``Infinity``, which JSON does not have:
    ``JSON.parse``, ``jq`` and strict parsers refuse the whole file."""
    try:
        return json.dumps(obj, indent=indent, allow_nan=False)
    except ValueError:  # an undefined number somewhere (rare): replace them all, then dump
        return json.dumps(_undefined_as_null(obj), indent=indent, allow_nan=False)


def atomic_write_json(path: PathLike, obj: Any, indent: int | None = 2) -> None:
    """Serialize ``obj`` as JSON (:func:`json_text`: an undefined number is null) and write it atomically."""
    atomic_write_text(path, json_text(obj, indent=indent) + "\n")


def append_jsonl(path: PathLike, record: dict) -> None:
    """Append one JSON record (:func:`json_text`) as a line and flush it to disk (results files, metrics logs).

    A last line torn by a crash mid-write is cut off first, so the new record starts a line of its
    own instead of being glued onto the fragment."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target, "a+b") as fh:
        size = fh.seek(0, os.SEEK_END)
        if size:
            fh.seek(size - 1)
            if fh.read(1) != b"\n":
                fh.seek(0)
                fh.truncate(fh.read().rfind(b"\n") + 1)
        fh.write((json_text(record) + "\n").encode("utf-8"))
        fh.flush()
        os.fsync(fh.fileno())


def read_jsonl(path: PathLike) -> list[dict]:
    """Read a JSON-lines file; a torn last line (crash mid-write) is ignored."""
    target = Path(path)
    if not target.exists():
        return []
    records = []
    lines = target.read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if i == len(lines) - 1:
                break
            raise
    return records


@contextmanager
def run_folder_lock(folder: PathLike) -> Iterator[Path]:
    """Hold an exclusive lock on ``folder`` (creating it) for the block: one writer per run folder.

    The lock is an ``flock`` on ``<folder>/.lock``, so the kernel releases it when the holder exits,
    even after ``kill -9``; a leftover ``.lock`` file never blocks a later run. A second job raises a
    WsolError naming the holder's pid instead of waiting.
    """
    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    lock = root / LOCK_NAME
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            raise WsolError(f"another wsol job is writing to {root} (pid {holder}); wait for it or choose another --out") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        yield root
    finally:
        os.close(fd)


def _nearest_existing(path: Path) -> Path:
    """``path`` or its closest ancestor that exists (the folder a new output would be created under)."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_writable_output(path: PathLike, kind: Literal["file", "folder"] = "file") -> Path:
    """Raise a one-line WsolError unless ``path`` can be written as an output ``kind``; touches nothing.

    The CLI calls it on ``--out`` while parsing, so a bad path fails at once instead of after an epoch.
    """
    if kind not in ("file", "folder"):
        raise ValueError(f"kind must be 'file' or 'folder', got {kind!r}")
    target = Path(path)
    if target.is_dir() and kind == "file":
        raise WsolError(f"cannot write {target}: it is an existing folder; give a file path, e.g. {target / 'out'}")
    if target.exists() and not target.is_dir() and kind == "folder":
        raise WsolError(f"cannot write into {target}: it is an existing file; give a folder (a new or an existing one)")
    base = _nearest_existing(target.parent if kind == "file" else target)
    if not base.is_dir():
        raise WsolError(f"cannot create {target}: {base} is a file, not a folder; choose another output path")
    if not os.access(base, os.W_OK | os.X_OK):
        raise WsolError(f"cannot write to {base}: the folder is read-only; choose another output path or change its permissions")
    return target
