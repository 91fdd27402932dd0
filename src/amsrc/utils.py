"""Small shared helpers: output checks, atomic writes, read-ahead.

Outputs never touch inputs: :func:`check_output` is what every command calls on each output path
before any work (refuse an input, a path inside a dataset tree, the wrong kind of path, an
unwritable place); :func:`atomic_path` then writes under a temporary name and renames.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import signal
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

from amsrc.errors import ConfigError, DataError


def _same(a: Path, b: Path) -> bool:
    try:
        return a == b or (a.exists() and b.exists() and os.path.samefile(a, b))
    except OSError:
        return False


def _inside(path: Path, tree: Path) -> bool:
    return path == tree or tree in path.parents


def check_writable(path: Path) -> None:
    """The nearest existing folder at or above ``path``'s parent accepts a new file (tried, then
    removed: permission bits do not tell for root or read-only mounts); DataError naming ``path``."""
    anc = path.parent
    while not anc.exists() and anc != anc.parent:
        anc = anc.parent
    if not anc.is_dir():
        raise DataError(path, f"cannot be created: {anc} is a file, not a folder")
    try:
        fd, tmp = tempfile.mkstemp(prefix=".amsrc-write-check-", dir=anc)
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        raise DataError(path, f"cannot write there: {anc} is not writable ({exc.strerror or exc})") from None


def check_output(path: str | Path, kind: str, option: str, inputs: dict[str, str | Path | None] | None = None,
                 trees: dict[str, str | Path | None] | None = None) -> Path:
    """Check an output path before any work is done; return it resolved.

    kind "file" or "dir" (an existing path of the other kind is refused); ``option`` names it in
    messages (e.g. "--csv"). ``inputs``: {role: path} of files or folders the command reads, which
    the output must not be (nor, for a folder output, contain); ``trees``: {role: folder} of input
    trees (a dataset, a cube store) the output must not lie inside. The nearest existing folder must
    accept a new file. Raises DataError naming the output path.
    """
    if kind not in ("file", "dir"):
        raise ValueError(f"kind must be 'file' or 'dir', got {kind!r}")
    out = Path(os.path.abspath(Path(path).expanduser()))
    real = Path(os.path.realpath(out))
    if kind == "file" and out.is_dir():
        raise DataError(out, f"is a folder; {option} needs a file name")
    if kind == "dir" and out.exists() and not out.is_dir():
        raise DataError(out, f"is a file; {option} needs a folder")
    for role, src in (inputs or {}).items():
        if src is None:
            continue
        src_p = Path(os.path.realpath(Path(src).expanduser()))
        if _same(real, src_p):
            raise DataError(out, f"is the {role}; {option} must not overwrite an input")
        if kind == "dir" and _inside(src_p, real):
            raise DataError(out, f"contains the {role} {src}; {option} must be a folder of its own")
    for role, tree in (trees or {}).items():
        if tree is None:
            continue
        tree_p = Path(os.path.realpath(Path(tree).expanduser()))
        if tree_p.is_dir() and _inside(real, tree_p):
            raise DataError(out, f"lies inside the {role} {tree}; {option} must be outside it")
    check_writable(out)
    return out


def temp_beside(path: str | Path) -> Path:
    """Create an empty temporary file beside ``path`` (hidden, same folder, so a rename is atomic)
    with the permissions a plain ``open()`` would give (0666 minus the umask; mkstemp gives 0600)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    return Path(tmp)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    Nothing half-written is ever visible under the final name.
    """
    path = Path(path)
    tmp_path = temp_beside(path)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


log = logging.getLogger("amsrc")


class _CurrentStderr(logging.StreamHandler):
    """A handler that writes to whatever ``sys.stderr`` is when a record comes (a redirect, a test's capture)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


def setup_logging(verbosity: int = 0) -> None:
    """The command line's logging: the ``amsrc`` logger's records as plain lines on stderr.

    verbosity < 0 (``-q``): warnings and errors only; 0: also progress lines (epochs, prepared clips);
    > 0 (``-v``): also debug lines. Safe to call more than once."""
    if not any(isinstance(h, _CurrentStderr) for h in log.handlers):
        h = _CurrentStderr()
        h.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(h)
    log.setLevel(logging.WARNING if verbosity < 0 else logging.INFO if verbosity == 0 else logging.DEBUG)


def show_bars(progress: bool) -> bool:
    """Progress bars only where a person watches: ``progress`` and stderr a terminal (a log file gets lines, not bars)."""
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(progress and isatty is not None and isatty())


def write_json_atomic(path: str | Path, obj) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")


def prefetch(iterable, depth: int = 4, join_s: float = 5.0):
    """Iterate ``iterable`` in a background thread, ``depth`` items ahead (decoding overlaps scoring:
    PyAV, OpenCV and torch release the GIL). Exceptions of the producer are re-raised here.

    When the consumer stops early (an error, Ctrl-C, ``close()``), the producer is told to stop,
    closes its iterator (a generator's clean-up) in its own thread and is waited for (up to ``join_s``; a producer blocked in a
    read that never returns, such as an idle stdin, is left behind as a daemon thread), so the caller
    may close the source underneath afterwards: a decoder is never closed while the thread reads it."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def put(entry) -> bool:
        while not stop.is_set():
            try:
                q.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def run():
        if hasattr(signal, "pthread_sigmask"):  # Ctrl-C goes to the main thread, never to this one
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        it = None
        try:
            it = iter(iterable)
            for item in it:
                if not put((None, item)):
                    return
            put((None, done))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            put((exc, None))
        finally:
            close = getattr(it, "close", None)  # a generator's own clean-up runs here, in this thread
            if close is not None:
                close()

    th = threading.Thread(target=run, name="amsrc-prefetch", daemon=True)
    th.start()
    try:
        while True:
            try:  # a wait with a timeout, so a pending Ctrl-C is raised here within 0.1 s
                exc, item = q.get(timeout=0.1)
            except queue.Empty:
                continue
            if exc is not None:
                raise exc
            if item is done:
                return
            yield item
    finally:
        stop.set()
        th.join(join_s)


def check_device(device: str) -> str:
    """``device`` if this torch can run on it ("cpu", "cuda", "cuda:N"); ConfigError otherwise,
    before any work (a CPU build of torch asked for cuda, an unknown name, a missing GPU index)."""
    import torch

    name = str(device).strip().lower()
    if name == "cpu":
        return "cpu"
    kind, _, idx = name.partition(":")
    if kind != "cuda" or (idx and not idx.isdigit()):
        raise ConfigError(f"--device must be cpu, cuda or cuda:N, got {device!r}")
    if not torch.cuda.is_available():
        build = "a CPU-only build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}"
        raise ConfigError(f"--device {device}: no CUDA device is usable (torch {torch.__version__} is {build}); "
                          "use --device cpu")
    if idx and int(idx) >= torch.cuda.device_count():
        raise ConfigError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return name
