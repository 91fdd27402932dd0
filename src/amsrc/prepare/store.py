"""The on-disk cube store: one shard (folder of .npy files) per clip plus a manifest.

Layout::

    STORE/manifest.json
    STORE/<split>/<clip>/appearance.npy   (N, 5, S, S, C) uint8
    STORE/<split>/<clip>/flow.npy         (N, 4, S, S, 2) float16, image pixels
    STORE/<split>/<clip>/boxes.npy        (N, 4) int32 x0, y0, x1, y1
    STORE/<split>/<clip>/frames.npy       (N,) int32 frame index of each cube
    STORE/<split>/<clip>/offsets.npy      (n_frames + 1,) int64: cubes of frame t are [offsets[t], offsets[t+1])
    STORE/<split>/<clip>/labels.npy       (n_frames,) uint8, only when the clip has frame labels
    STORE/<split>/<clip>/object_labels.npy (N,) uint8, only when the clip has pixel masks: 1 = the
                                          cube's box holds >= 20 anomalous mask pixels
                                          (amsrc.prepare.recall.OBJECT_MIN_PX)
    STORE/<split>/<clip>/done.json        written last: key, sizes, checksums, shapes, build stats

Writing. A clip is built in a hidden temporary folder beside its final place (arrays are streamed to
disk frame by frame, so a long video never sits in memory); ``done.json`` is written last, then the
folder is renamed into place. A killed run therefore never leaves a clip that looks complete; its
temporary folder is removed by the next run that builds that clip.

Keys. ``settings_hash`` hashes the PrepareConfig (minus thread counts, which do not change the
output) and the cube format version; ``source_hash`` hashes, per clip, the source path, the frame
count, every source file's name, size and bytes sampled at its start, middle and end (not its
mtime: the same footage copied again keeps its key), and the frame labels. A clip's key hashes both;
a clip is reused only when its key matches, so a changed setting or a changed source file always
rebuilds it.

Checksums. Every .npy records its byte size and the CRC-32 (zlib) of its data bytes (everything
after the .npy header). ``CubeStore.open`` checks that every shard is complete and that every file
has its recorded size (cheap: ``stat``); ``CubeStore.load`` also checks the shapes/dtypes in the
headers and, by default, the CRC-32 of the clip's files (about 3 GB/s); ``amsrc prepare`` checks the
full CRC-32 of every clip it reuses, so a truncated or corrupted shard is rebuilt, never read.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import time
import uuid
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from amsrc.errors import ConfigError, DataError
from amsrc.prepare.background import background_hash, read_background
from amsrc.prepare.cubes import CUBE_FORMAT, T_APPEARANCE, T_FLOW, FrameObjects
from amsrc.utils import write_json_atomic

STORE_FORMAT = 2  # bump when the on-disk layout changes (2: object_labels.npy)
MANIFEST = "manifest.json"
DONE = "done.json"
ARRAYS = ("appearance", "flow", "boxes", "frames", "offsets")  # + "labels", "object_labels" when known
OPTIONAL = ("labels", "object_labels")
_CHUNK = 1 << 24  # bytes read at a time when checksumming


# ---------------------------------------------------------------- hashing
def _strip_threads(d: Any) -> Any:
    if isinstance(d, dict):
        return {k: _strip_threads(v) for k, v in d.items() if k != "threads"}
    return d


# Top-level prepare settings added after stores existed, with the value that reproduces the cubes of
# before: left out of the hash at that value, so adding them did not rebuild every store.
_NEUTRAL = {"scale": 1.0}


def settings_hash(settings: dict) -> str:
    """Hash of the preprocessing settings that change the cubes (thread counts excluded)."""
    settings = {k: v for k, v in settings.items() if not (k in _NEUTRAL and v == _NEUTRAL[k])}
    blob = json.dumps(
        {"settings": _strip_threads(settings), "cube_format": CUBE_FORMAT, "store_format": STORE_FORMAT},
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()


SAMPLE = 64 * 1024  # bytes read from the start, middle and end of each source file by source_hash


def _sampled(f, h) -> None:
    """Feed ``h`` a file's name, size and bytes at its start, middle and end (all of a file up to 3 x SAMPLE)."""
    try:
        size = os.stat(f).st_size
        with open(f, "rb") as fh:
            h.update(f"{Path(f).name}\0{size}\n".encode())
            if size <= 3 * SAMPLE:
                h.update(fh.read())
                return
            for at in (0, size // 2 - SAMPLE // 2, size - SAMPLE):
                fh.seek(at)
                h.update(fh.read(SAMPLE))
    except OSError:
        raise DataError(f, "source file of the clip is missing or unreadable") from None


def source_hash(clip) -> str:
    """Cheap fingerprint of a clip's source: path, frame count, each file's name, size and sampled bytes
    (:func:`_sampled`; not its mtime, so a copy of the same footage, e.g. a dataset unpacked again, keeps
    its key), labels."""
    h = hashlib.sha256()
    h.update(f"{Path(clip.source).resolve()}\n{clip.n_frames}\n".encode())
    files = clip.frame_files if clip.frame_files is not None else (clip.source,)
    for f in files:
        _sampled(f, h)
    if clip.labels is not None:
        h.update(b"labels")
        h.update(np.ascontiguousarray(clip.labels, dtype=np.uint8).tobytes())
    return h.hexdigest()


def clip_key(settings_h: str, source_h: str) -> str:
    return hashlib.sha256(f"{settings_h}:{source_h}".encode()).hexdigest()


# ---------------------------------------------------------------- streamed .npy files
class _NpyStream:
    """Append rows to an .npy file of yet unknown length; the final header is written on close.

    The header is numpy's own (``numpy.lib.format.write_array_header_1_0``), written twice: once on
    open with a row count of 0 to reserve its space, then over it on close with the real count. This
    works in place because numpy (>= 1.24, PR numpy#20321) pads the header with spare room for the
    first axis to grow to 21 digits, so both headers have the same length; the data therefore never
    has to be copied. Should a numpy ever produce a final header of a different length, ``close``
    falls back to writing the header followed by a copy of the data to a new file (slow, but correct).
    """

    def __init__(self, path: Path, dtype: str, item_shape: tuple[int, ...]):
        self.path = path
        self.dtype = np.dtype(dtype)
        self.item_shape = tuple(item_shape)
        self.n = 0
        self.crc = 0
        self._done = False
        self._f = open(path, "wb")
        try:
            self.offset = self._f.write(self._header(0))  # where the data starts
        except BaseException:
            self.discard()
            raise

    def _header(self, n: int) -> bytes:
        """The .npy 1.0 header of an array of ``n`` rows, as numpy writes it."""
        d = np.lib.format.header_data_from_array_1_0(np.empty((0, *self.item_shape), self.dtype))
        d["shape"] = (n, *self.item_shape)
        buf = io.BytesIO()
        np.lib.format.write_array_header_1_0(buf, d)
        return buf.getvalue()

    def append(self, arr: np.ndarray) -> None:
        arr = np.ascontiguousarray(arr, dtype=self.dtype)
        if arr.shape[1:] != self.item_shape:
            raise ValueError(f"{self.path.name}: rows of shape {arr.shape[1:]}, expected {self.item_shape}")
        if arr.shape[0] == 0:
            return
        mv = memoryview(arr).cast("B")
        self.crc = zlib.crc32(mv, self.crc)
        self._f.write(mv)
        self.n += arr.shape[0]

    def close(self) -> dict:
        shape = (self.n, *self.item_shape)
        try:
            header = self._header(self.n)
            if len(header) == self.offset:
                self._f.seek(0)
                self._f.write(header)
                self._f.close()
            else:  # the header length changed (a numpy without growth padding): rewrite the file
                self._f.flush()
                tmp = self.path.with_name(self.path.name + ".rehead")
                try:
                    with open(tmp, "wb") as out, open(self.path, "rb") as src:
                        out.write(header)
                        src.seek(self.offset)
                        shutil.copyfileobj(src, out, _CHUNK)
                    self._f.close()
                    os.replace(tmp, self.path)
                finally:
                    tmp.unlink(missing_ok=True)
                self.offset = len(header)
        except BaseException:
            self.discard()
            raise
        self._done = True
        return {
            "shape": list(shape),
            "dtype": self.dtype.str,
            "bytes": self.offset + self.n * int(np.prod(self.item_shape, dtype=np.int64)) * self.dtype.itemsize,
            "crc32": self.crc,
        }

    def discard(self) -> None:
        """Drop an unfinished stream: close it and remove its file (a closed stream's file is kept)."""
        if self._done:
            return
        if not self._f.closed:
            try:
                self._f.close()
            except OSError:  # a full disk fails the final flush; the file is closed anyway and removed below
                pass
        self.path.unlink(missing_ok=True)


def _npy_header(path: Path) -> tuple[tuple[int, ...], str, int]:
    """(shape, dtype str, data offset) of an .npy file; DataError if the header is unreadable."""
    try:
        with open(path, "rb") as f:
            major, _minor = np.lib.format.read_magic(f)
            if major == 1:
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
            else:
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
            offset = f.tell()
    except Exception as exc:
        raise DataError(path, f"corrupted .npy header ({exc}); re-run `amsrc prepare` to rebuild this clip") from None
    if fortran or dtype.hasobject:
        raise DataError(path, "unexpected .npy layout (Fortran order or object dtype); re-run `amsrc prepare`")
    return tuple(shape), dtype.str, offset


def _crc_data(path: Path, offset: int) -> int:
    crc = 0
    with open(path, "rb") as f:
        f.seek(offset)
        while True:
            b = f.read(_CHUNK)
            if not b:
                break
            crc = zlib.crc32(b, crc)
    return crc


def check_files(folder: Path, files: dict, full: bool) -> str | None:
    """Why the shard in ``folder`` does not match its recorded files, or None when it does.

    Always checks presence and byte sizes; ``full`` also checks headers and CRC-32 of the data.
    """
    for name, info in files.items():
        path = folder / name
        try:
            size = path.stat().st_size
        except OSError:
            return f"{path}: missing"
        if size != info["bytes"]:
            return f"{path}: truncated or altered ({size} bytes, expected {info['bytes']})"
        if full:
            try:
                shape, dtype, offset = _npy_header(path)
            except DataError as exc:
                return str(exc)
            if list(shape) != list(info["shape"]) or dtype != info["dtype"]:
                return f"{path}: header says {dtype} {shape}, expected {info['dtype']} {tuple(info['shape'])}"
            if _crc_data(path, offset) != info["crc32"]:
                return f"{path}: corrupted (CRC-32 mismatch)"
    return None


# ---------------------------------------------------------------- writing a clip
def _check_name(name: str, where: Path | None = None) -> None:
    """A clip or split name that is one plain folder name (``where``: the file it came from, for the message)."""
    if not isinstance(name, str) or not name or name.startswith(".") or "/" in name or "\\" in name:
        raise DataError(where, f"clip or split name {name!r} cannot be a store folder name")


def clip_dir(root: Path, split: str, name: str) -> Path:
    _check_name(split)
    _check_name(name)
    return Path(root) / split / name


class ClipWriter:
    """Streams the FrameObjects of one clip (t = 0, 1, ...) into a temporary shard; ``commit`` publishes it."""

    def __init__(self, root: Path, split: str, name: str, cube_size: int, channels: int):
        self.final = clip_dir(root, split, name)
        self.final.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.final.parent / f".{name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.tmp.mkdir()
        s, c = cube_size, channels
        self._streams = {
            "appearance": _NpyStream(self.tmp / "appearance.npy", "|u1", (T_APPEARANCE, s, s, c)),
            "flow": _NpyStream(self.tmp / "flow.npy", "<f2", (T_FLOW, s, s, 2)),
            "boxes": _NpyStream(self.tmp / "boxes.npy", "<i4", (4,)),
            "frames": _NpyStream(self.tmp / "frames.npy", "<i4", ()),
            "offsets": _NpyStream(self.tmp / "offsets.npy", "<i8", ()),
        }
        self._streams["offsets"].append(np.zeros(1, np.int64))
        self.n_frames = 0
        self.n_cubes = 0

    def add(self, obj: FrameObjects) -> None:
        """The objects of the next frame (``obj.t`` must be the number of frames added so far)."""
        if obj.t != self.n_frames:
            raise ValueError(f"frames must be added in order: got t={obj.t}, expected {self.n_frames}")
        k = len(obj.boxes)
        if k:
            self._streams["appearance"].append(obj.appearance)
            self._streams["flow"].append(obj.flow)
            self._streams["boxes"].append(obj.boxes)
            self._streams["frames"].append(np.full(k, obj.t, np.int32))
        self.n_cubes += k
        self.n_frames += 1
        self._streams["offsets"].append(np.array([self.n_cubes], np.int64))

    def commit(self, info: dict, labels: np.ndarray | None = None, object_labels: np.ndarray | None = None) -> dict:
        """Close the files, write done.json (``info`` + files) last, rename the shard into place.

        labels (n_frames,) frame labels and object_labels (n_cubes,) per-cube labels, where known."""
        files = {f"{k}.npy": s.close() for k, s in self._streams.items()}
        for key, arr, n in (("labels", labels, self.n_frames), ("object_labels", object_labels, self.n_cubes)):
            if arr is None:
                continue
            arr = np.ascontiguousarray(arr, dtype=np.uint8)
            if arr.shape != (n,):
                raise DataError(self.final, f"{key} have shape {arr.shape}, expected ({n},)")
            ls = _NpyStream(self.tmp / f"{key}.npy", "|u1", ())
            ls.append(arr)
            files[f"{key}.npy"] = ls.close()
        done = {
            **info,
            "store_format": STORE_FORMAT,
            "n_frames": self.n_frames,
            "n_cubes": self.n_cubes,
            "files": files,
        }
        write_json_atomic(self.tmp / DONE, done)
        old = None
        if self.final.exists():
            foreign = _foreign_entries(self.final)
            if foreign:
                raise DataError(self.final, f"exists and holds {foreign[0].name!r}, which is not part of a cube "
                                            "shard; refusing to replace it (is the store's folder a dataset's?)")
            old = self.final.parent / f".{self.final.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            os.replace(self.final, old)
        os.replace(self.tmp, self.final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return done

    def abort(self) -> None:
        for s in self._streams.values():
            s.discard()
        shutil.rmtree(self.tmp, ignore_errors=True)


def _foreign_entries(folder: Path) -> list[Path]:
    """What in an existing clip folder a shard would not have written (anything but .npy files and done.json)."""
    if not folder.is_dir():
        return [folder]
    return sorted(p for p in folder.iterdir() if not (p.is_file() and (p.suffix == ".npy" or p.name == DONE)))


def remove_stale_temps(root: Path, split: str, name: str) -> None:
    """Remove temporary folders a killed run left for this clip (only call for clips this run builds)."""
    parent = Path(root) / split
    if parent.is_dir():
        for p in parent.glob(f".{name}.tmp-*"):
            shutil.rmtree(p, ignore_errors=True)
        for p in parent.glob(f".{name}.old-*"):
            shutil.rmtree(p, ignore_errors=True)


def read_done(root: Path, split: str, name: str) -> dict | None:
    """The done.json of a clip, or None when the clip was never completed (or it is unreadable)."""
    path = clip_dir(root, split, name) / DONE
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def reuse_problem(root: Path, split: str, name: str, settings_h: str, source_h: str, full: bool = True) -> str | None:
    """Why a stored clip cannot be reused (a short reason), or None when it can."""
    done = read_done(root, split, name)
    if done is None:
        return "not built"
    if done.get("store_format") != STORE_FORMAT:
        return "older store format"
    if done.get("settings_hash") != settings_h:
        return "settings changed"
    if done.get("source_hash") != source_h:
        return "source changed"
    problem = check_files(clip_dir(root, split, name), done.get("files", {}), full=full)
    if problem is not None:
        return problem
    return None


def _store_key(settings_h: str, clip_keys: list[str]) -> str:
    """The key of a store: its settings and every clip (its key: settings and source), in dataset order."""
    return hashlib.sha256((settings_h + "".join(clip_keys)).encode()).hexdigest()


def _check_manifest_key(path: Path, manifest: dict) -> None:
    """A manifest edited after preparing (a clip removed or renamed, a setting changed) no longer
    matches its key: refuse it rather than evaluate on what is left."""
    try:
        for split, names in manifest["splits"].items():
            _check_name(split, path)
            for name in names:
                _check_name(name, path)
        keys = [manifest["clips"][f"{split}/{name}"]["key"] for split, names in manifest["splits"].items()
                for name in names]
        ok = (settings_hash(manifest["settings"]) == manifest["settings_hash"]
              and _store_key(manifest["settings_hash"], keys) == manifest["key"])
    except (KeyError, TypeError, AttributeError) as exc:
        raise DataError(path, f"malformed manifest (missing or bad entry {exc}); re-run `amsrc prepare`") from None
    if not ok:
        raise DataError(path, "the manifest does not match its key: it was edited after preparing (a clip "
                              "removed or renamed, a setting changed); re-run `amsrc prepare` to rewrite it")


def write_manifest(
    root: Path,
    settings: dict,
    preset: str,
    clip_order: list[tuple[str, str, str]],
) -> dict:
    """Write STORE/manifest.json from the done.json of every clip.

    clip_order: (split, name, key) of every clip of the dataset, in dataset order; a clip counts as
    done when its done.json carries that key. ``complete`` is True when all are done.
    """
    splits: dict[str, list[str]] = {}
    clips: dict[str, dict] = {}
    missing = []
    for split, name, key in clip_order:
        splits.setdefault(split, []).append(name)
        done = read_done(root, split, name)
        if done is None or done.get("key") != key:
            missing.append(f"{split}/{name}")
            continue
        clips[f"{split}/{name}"] = {k: done[k] for k in ("key", "source", "n_frames", "n_cubes", "files", "frame_size")
                                    if k in done}
    sh = settings_hash(settings)
    store_key = _store_key(sh, [k for _, _, k in clip_order])
    manifest = {
        "store_format": STORE_FORMAT,
        "preset": preset,
        "settings": settings,
        "settings_hash": sh,
        "key": store_key,
        "complete": not missing,
        "missing": missing,
        "splits": splits,
        "clips": clips,
        "written_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    write_json_atomic(Path(root) / MANIFEST, manifest)
    return manifest


# ---------------------------------------------------------------- reading
@dataclass
class ClipCubes:
    """The cubes of one clip, memory-mapped."""

    split: str
    name: str
    n_frames: int
    source: str  # frame folder or video path of the clip
    appearance: np.ndarray  # (N, 5, S, S, C) uint8, memory-mapped
    flow: np.ndarray  # (N, 4, S, S, 2) float16, memory-mapped, vectors in image pixels
    boxes: np.ndarray  # (N, 4) int32 x0, y0, x1, y1
    frames: np.ndarray  # (N,) int32 frame index t of each cube, non-decreasing
    offsets: np.ndarray  # (n_frames + 1,) int64: cubes of frame t are [offsets[t], offsets[t+1])
    labels: np.ndarray | None  # (n_frames,) uint8 frame labels, None if unknown
    # (N,) uint8 1 = the cube's box covers an anomalous object (pixel masks), None if unknown
    object_labels: np.ndarray | None = None
    # (H, W) of the clip's frames (the boxes' pixels) as recorded when it was prepared; None in stores
    # written before it was: :attr:`frame_size` then reads it from the source
    frame_hw: tuple[int, int] | None = None

    @property
    def n_cubes(self) -> int:
        return int(self.frames.shape[0])

    @property
    def frame_size(self) -> tuple[int, int]:
        """(H, W) of the clip's frames, the pixels its boxes are in."""
        if self.frame_hw is None:
            from amsrc.data.layouts import source_frame_size

            self.frame_hw = source_frame_size(self.source)
        return self.frame_hw


class CubeStore:
    """A finished cube store (see the module docstring for the layout)."""

    def __init__(self, root: Path, manifest: dict):
        self.root = Path(root)
        self.manifest = manifest
        # the PrepareConfig as a dict; settings added since the store was written read at their neutral value
        self.settings: dict = {**_NEUTRAL, **manifest["settings"]}
        self.background = read_background(self.root)  # box method "bg": the training background, else None
        want = self.settings.get("background")
        if want is not None and (self.background is None or background_hash(self.background) != want):
            raise DataError(self.root / "background.png", "missing or not the background these cubes were "
                                                          "prepared with; prepare the store again")
        self.key: str = manifest["key"]  # hash of the settings and of every clip's source
        self.preset: str = manifest.get("preset", "")

    @classmethod
    def open(cls, root: str | Path) -> CubeStore:
        """Open a store; DataError if it is missing, incomplete, or a shard is missing/truncated."""
        root = Path(root)
        path = root / MANIFEST
        if not path.is_file():
            raise DataError(path, "no cube store here (manifest.json missing); run `amsrc prepare` first")
        try:
            manifest = json.loads(path.read_text())
        except ValueError as exc:
            raise DataError(path, f"unreadable manifest ({exc}); re-run `amsrc prepare`") from None
        if manifest.get("store_format") != STORE_FORMAT:
            raise DataError(
                path, f"store format {manifest.get('store_format')}, expected {STORE_FORMAT}; re-run `amsrc prepare`"
            )
        if not manifest.get("complete"):
            missing = manifest.get("missing", [])
            shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
            raise DataError(
                path,
                f"store incomplete: {len(missing)} clip(s) not prepared ({shown}); run `amsrc prepare` "
                "(without --shard) to finish it",
            )
        _check_manifest_key(path, manifest)
        store = cls(root, manifest)
        for split in store.splits():
            for name in store.clips(split):
                store._check_clip(split, name, full=False)
        return store

    def splits(self) -> list[str]:
        return list(self.manifest["splits"])

    def clips(self, split: str) -> list[str]:
        """Clip names of ``split`` in dataset order."""
        return list(self.manifest["splits"].get(split, []))

    def training_split(self) -> str:
        """The split of normal footage to train on: "training", else "all"."""
        for s in ("training", "all"):
            if s in self.manifest["splits"]:
                return s
        raise ConfigError(f"{self.root}: the cube store has no 'training' (or 'all') split; it has {self.splits()}")

    def _entry(self, split: str, name: str) -> dict:
        entry = self.manifest["clips"].get(f"{split}/{name}")
        if entry is None:
            raise DataError(self.root / MANIFEST, f"no clip {split}/{name} in this store")
        return entry

    def _check_clip(self, split: str, name: str, full: bool) -> None:
        entry = self._entry(split, name)
        folder = clip_dir(self.root, split, name)
        done = read_done(self.root, split, name)
        if done is None or done.get("key") != entry["key"]:
            raise DataError(
                folder,
                "shard missing or rebuilt with other settings since the manifest was written; "
                "re-run `amsrc prepare`",
            )
        problem = check_files(folder, entry["files"], full=full)
        if problem is not None:
            raise DataError(folder, f"{problem}; re-run `amsrc prepare` to rebuild this clip")

    def verify(self) -> None:
        """Full check (headers and CRC-32) of every shard; DataError on the first problem."""
        for split in self.splits():
            for name in self.clips(split):
                self._check_clip(split, name, full=True)

    def load(self, split: str, name: str, verify: bool = True) -> ClipCubes:
        """The cubes of one clip, memory-mapped. ``verify`` checks the CRC-32 of its files first."""
        self._check_clip(split, name, full=verify)
        entry = self._entry(split, name)
        folder = clip_dir(self.root, split, name)
        arrays: dict[str, np.ndarray | None] = {}
        for key in (*ARRAYS, *OPTIONAL):
            fname = f"{key}.npy"
            if fname not in entry["files"]:
                arrays[key] = None
                continue
            info = entry["files"][fname]
            try:
                arr = np.load(folder / fname, mmap_mode="r", allow_pickle=False)
            except Exception as exc:
                raise DataError(folder / fname, f"unreadable ({exc}); re-run `amsrc prepare`") from None
            if list(arr.shape) != list(info["shape"]) or arr.dtype.str != info["dtype"]:
                raise DataError(
                    folder / fname, f"has {arr.dtype} {arr.shape}, expected {info['dtype']} {tuple(info['shape'])}"
                )
            arrays[key] = arr
        n_frames = int(entry["n_frames"])
        offsets = np.asarray(arrays["offsets"])
        n = arrays["frames"].shape[0]
        if offsets.shape != (n_frames + 1,) or offsets[0] != 0 or offsets[-1] != n:
            raise DataError(folder / "offsets.npy", f"inconsistent with {n_frames} frames and {n} cubes")
        return ClipCubes(
            split=split,
            name=name,
            n_frames=n_frames,
            source=entry["source"],
            appearance=arrays["appearance"],
            flow=arrays["flow"],
            boxes=np.asarray(arrays["boxes"]),
            frames=np.asarray(arrays["frames"]),
            offsets=offsets,
            labels=None if arrays["labels"] is None else np.asarray(arrays["labels"]),
            object_labels=None if arrays["object_labels"] is None else np.asarray(arrays["object_labels"]),
            frame_hw=tuple(entry["frame_size"]) if entry.get("frame_size") else None,
        )
