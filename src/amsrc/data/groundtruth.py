"""Ground-truth readers: frame intervals in a .mat, the official UCSD .m list, CUHK Avenue
``volLabel`` .mat files, ShanghaiTech .npy masks, JSON frame lists, and pixel-mask sources.

Nothing here ever unpickles: a pickle where ground truth is expected is refused
(:func:`refuse_pickle`), ``np.load`` always runs with ``allow_pickle=False``, and .mat files are
read with scipy (MATLAB v4/v5/v7 formats; v7.3 is HDF5 and is refused with a how-to).

Conventions: frame numbers in ground-truth files are 1-based and inclusive (MATLAB); frame labels
returned here are (n_frames,) uint8 arrays, 1 = anomalous frame.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
from scipy.io import loadmat, savemat

from amsrc.errors import DataError

PICKLE_SUFFIXES = (".pkl", ".pickle", ".pck", ".joblib")

_CONVERT_HOWTO = (
    "convert it once, on a machine where you trust the file, e.g. "
    "python -c \"import pickle, json; d = pickle.load(open('{name}', 'rb')); "
    "json.dump([[int(v) for v in c] for c in d], open('gt_frames.json', 'w'))\" "
    "(a JSON list of per-clip 0/1 frame labels), or save the labels as .npy/.mat; then remove the pickle"
)


# ---------------------------------------------------------------- pickles
def is_pickle(path: str | Path) -> bool:
    """True if ``path`` looks like a Python pickle (by suffix or by the protocol-2+ opcode b"\\x80")."""
    path = Path(path)
    if path.suffix.lower() in PICKLE_SUFFIXES:
        return True
    try:
        with open(path, "rb") as fh:
            head = fh.read(2)
    except OSError:
        return False
    return len(head) == 2 and head[0] == 0x80 and 1 <= head[1] <= 5


def refuse_pickle(path: str | Path) -> None:
    """Raise :class:`DataError` if ``path`` is a Python pickle; never loads it.

    HF2-VAD's ``gt_label.json``, for instance, is a pickle despite its name.
    """
    path = Path(path)
    if is_pickle(path):
        raise DataError(
            path,
            "is a Python pickle where ground truth is expected; it is never unpickled, because "
            "unpickling runs arbitrary code. To use it, " + _CONVERT_HOWTO.format(name=path.name),
        )


def _check_file(path: Path, what: str) -> None:
    if not path.is_file():
        raise DataError(path, f"{what} not found")
    if path.stat().st_size == 0:
        raise DataError(path, f"{what} is empty")
    refuse_pickle(path)


def load_mat(path: str | Path, variables: Sequence[str]) -> dict:
    """``scipy.io.loadmat`` with clear errors; the named variables must be present."""
    path = Path(path)
    _check_file(path, "ground-truth .mat file")
    try:
        data = loadmat(str(path), variable_names=list(variables))
    except NotImplementedError:
        raise DataError(
            path,
            "MATLAB v7.3 (HDF5) .mat files are not read; re-save it as v7 "
            "(MATLAB: save(name, vars{:}, '-v7')) or export the labels to .npy",
        ) from None
    except Exception as exc:  # scipy raises ValueError/MatReadError/TypeError on malformed files
        raise DataError(path, f"unreadable .mat file ({exc.__class__.__name__}: {exc})") from None
    for v in variables:
        if v not in data:
            keys = sorted(k for k in data if not k.startswith("__"))
            raise DataError(path, f"expected a variable '{v}' in this .mat file, found {keys or 'none'}")
    return data


# ---------------------------------------------------------------- frame intervals (.mat gt)
def _as_intervals(entry, path: Path, k: int) -> np.ndarray:
    """One clip's entry -> (M, 2) int64 [start, end] rows, 1-based inclusive."""
    a = np.asarray(entry)
    if a.dtype == object:
        raise DataError(path, f"gt entry {k + 1}: expected a numeric 2xM array of [start; end], got a nested cell")
    if a.size == 0:
        return np.zeros((0, 2), np.int64)
    if not np.issubdtype(a.dtype, np.number):
        raise DataError(path, f"gt entry {k + 1}: expected numbers, got {a.dtype}")
    if a.ndim == 1 and a.size == 2:
        a = a.reshape(2, 1)
    elif a.ndim == 2 and a.shape == (1, 2):
        a = a.T
    elif a.ndim == 2 and a.shape[0] != 2 and a.shape[1] == 2:
        a = a.T  # M x 2 rows (M != 2); a 2x2 entry is read as 2xM, MATLAB's convention
    if a.ndim != 2 or a.shape[0] != 2:
        raise DataError(path, f"gt entry {k + 1}: expected a 2xM array of [start; end] columns, got shape {a.shape}")
    if not np.all(np.isfinite(a)) or not np.all(a == np.round(a)):
        raise DataError(path, f"gt entry {k + 1}: frame numbers must be whole numbers")
    return a.T.astype(np.int64)


def read_mat_intervals(path: str | Path, key: str = "gt") -> list[np.ndarray]:
    """Frame-level ground truth of the frames layout: ``key`` is a 1xK cell, per clip a 2xM array
    of M [start; end] intervals (1-based, inclusive). Returns K arrays (M, 2) int64."""
    path = Path(path)
    gt = load_mat(path, [key])[key]
    if gt.dtype == object:
        if gt.ndim != 2 or min(gt.shape) > 1:
            raise DataError(path, f"'{key}' must be a 1xK cell array (one entry per test clip), got shape {gt.shape}")
        entries = list(gt.reshape(-1))
    elif gt.ndim == 3 and gt.shape[1] == 2:
        entries = [gt[k] for k in range(gt.shape[0])]  # K x 2 x M numeric (savemat of equal-sized arrays)
    else:
        raise DataError(
            path,
            f"'{key}' must be a 1xK cell array of 2xM [start; end] arrays, got a numeric array of shape "
            f"{gt.shape} (ambiguous); save it as a cell (a numpy object array)",
        )
    return [_as_intervals(e, path, k) for k, e in enumerate(entries)]


def intervals_to_labels(intervals: np.ndarray, n_frames: int, path: str | Path, clip: str) -> np.ndarray:
    """(M, 2) 1-based inclusive intervals -> (n_frames,) uint8 labels; every interval must fit the clip."""
    labels = np.zeros(n_frames, np.uint8)
    for start, end in np.asarray(intervals, np.int64).reshape(-1, 2):
        if not 1 <= start <= end <= n_frames:
            raise DataError(
                path,
                f"clip {clip}: anomalous interval [{start}, {end}] does not fit its {n_frames} frames "
                f"(expected 1 <= start <= end <= {n_frames}, 1-based inclusive)",
            )
        labels[start - 1 : end] = 1
    return labels


def frames_to_labels(frames: np.ndarray, n_frames: int, path: str | Path, clip: str) -> np.ndarray:
    """1-based anomalous frame numbers -> (n_frames,) uint8 labels; every number must fit the clip."""
    frames = np.asarray(frames, np.int64)
    bad = frames[(frames < 1) | (frames > n_frames)]
    if bad.size:
        raise DataError(
            path, f"clip {clip}: anomalous frame {int(bad[0])} is outside its {n_frames} frames (1-based)"
        )
    labels = np.zeros(n_frames, np.uint8)
    labels[frames - 1] = 1
    return labels


# ---------------------------------------------------------------- official UCSD .m
_M_STATEMENT = re.compile(
    r"TestVideoFile\s*\{\s*(end\s*\+\s*1|\d+)\s*\}\s*\.\s*gt_frame\s*=\s*\[([^\]]*)\]\s*;?"
)
_M_TOKEN = re.compile(r"^(\d+)(?::(\d+))?(?::(\d+))?$")


def _matlab_range(token: str, path: Path, k: int) -> np.ndarray:
    m = _M_TOKEN.match(token)
    if m is None:
        raise DataError(path, f"clip {k}: cannot read '{token}' in gt_frame (expected a, a:b or a:step:b)")
    a, b, c = (int(g) if g is not None else None for g in m.groups())
    if b is None:
        return np.array([a], np.int64)
    if c is None:
        return np.arange(a, b + 1, dtype=np.int64)
    if b == 0:
        raise DataError(path, f"clip {k}: zero step in '{token}'")
    return np.arange(a, c + 1, b, dtype=np.int64)


def read_ucsd_m(path: str | Path) -> list[np.ndarray]:
    """The official UCSD list (``TestVideoFile{end+1}.gt_frame = [a:b, c:d];``).

    Returns, per test clip in file order, the sorted 1-based anomalous frame numbers (int64).
    Ranges may be separated by commas or spaces; ``a:step:b`` and single numbers are read too.
    """
    path = Path(path)
    _check_file(path, "UCSD ground-truth .m file")
    try:
        text = path.read_text(errors="strict")
    except (UnicodeDecodeError, OSError) as exc:
        raise DataError(path, f"unreadable .m file ({exc})") from None
    text = re.sub(r"\.\.\.[^\n]*\n", " ", text)  # MATLAB line continuations
    text = re.sub(r"%[^\n]*", "", text)  # comments
    clips: list[np.ndarray] = []
    for m in _M_STATEMENT.finditer(text):
        where, body = m.group(1), m.group(2)
        k = len(clips) + 1
        if not where.startswith("end") and int(where) != k:
            raise DataError(path, f"TestVideoFile{{{where}}} found where entry {k} was expected (entries must be in order)")
        body = re.sub(r"\s*:\s*", ":", body.strip())
        tokens = [t for t in re.split(r"[\s,;]+", body) if t]
        parts = [_matlab_range(t, path, k) for t in tokens]
        frames = np.unique(np.concatenate(parts)) if parts else np.zeros(0, np.int64)
        clips.append(frames)
    n_mentions = len(re.findall(r"gt_frame", text))
    if n_mentions != len(clips):
        raise DataError(
            path,
            f"{n_mentions} gt_frame assignments but only {len(clips)} in the expected form "
            "'TestVideoFile{end+1}.gt_frame = [a:b, c:d];'",
        )
    if not clips:
        raise DataError(path, "no 'TestVideoFile{end+1}.gt_frame = [...]' entries found")
    return clips


# ---------------------------------------------------------------- CUHK Avenue volLabel
def read_vol_label(path: str | Path) -> list[np.ndarray]:
    """Avenue ``N_label.mat``: ``volLabel`` is a 1xT cell of (H, W) masks. Returns T bool masks."""
    path = Path(path)
    vol = load_mat(path, ["volLabel"])["volLabel"]
    if vol.dtype != object or vol.ndim != 2 or (min(vol.shape) > 1):
        raise DataError(path, f"'volLabel' must be a 1xT cell array of masks, got {vol.dtype} of shape {vol.shape}")
    masks = []
    shape = None
    for t, m in enumerate(vol.reshape(-1)):
        m = np.asarray(m)
        if m.ndim != 2 or m.size == 0 or not (np.issubdtype(m.dtype, np.number) or m.dtype == bool):
            raise DataError(path, f"volLabel entry {t + 1}: expected a 2-D numeric mask, got {m.dtype} of shape {m.shape}")
        if shape is None:
            shape = m.shape
        elif m.shape != shape:
            raise DataError(path, f"volLabel entry {t + 1}: mask shape {m.shape} differs from the first mask's {shape}")
        masks.append(m != 0)
    if not masks:
        raise DataError(path, "'volLabel' holds no masks")
    return masks


def vol_label_frame_labels(path: str | Path) -> tuple[np.ndarray, tuple[int, int]]:
    """(T,) uint8 frame labels from an Avenue ``volLabel`` file (anomalous iff any non-zero pixel), and (H, W)."""
    masks = read_vol_label(path)
    labels = np.fromiter((m.any() for m in masks), dtype=np.uint8, count=len(masks))
    return labels, masks[0].shape


class VolLabelMasks:
    """Pixel masks of an Avenue clip, loaded from its ``volLabel`` .mat on first use (bit-packed in memory)."""

    def __init__(self, path: str | Path, n_frames: int, shape: tuple[int, int]):
        self.path = Path(path)
        self.n_frames = n_frames
        self.shape = tuple(shape)
        self._packed: np.ndarray | None = None  # (T, H, ceil(W/8)) uint8

    def __len__(self) -> int:
        return self.n_frames

    def read(self, i: int) -> np.ndarray:
        if not 0 <= i < self.n_frames:
            raise IndexError(f"{self.path}: mask {i} out of range 0..{self.n_frames - 1}")
        if self._packed is None:
            masks = read_vol_label(self.path)
            if len(masks) != self.n_frames or masks[0].shape != self.shape:
                raise DataError(self.path, "changed on disk since the dataset was indexed")
            self._packed = np.stack([np.packbits(m, axis=1) for m in masks])
        return np.unpackbits(self._packed[i], axis=1, count=self.shape[1]).astype(bool)


# ---------------------------------------------------------------- .npy (ShanghaiTech)
def load_npy(path: str | Path, mmap: bool = False) -> np.ndarray:
    """``np.load`` with ``allow_pickle=False`` and clear errors."""
    path = Path(path)
    _check_file(path, "ground-truth .npy file")
    try:
        arr = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except ValueError as exc:
        raise DataError(
            path,
            f"cannot be read without unpickling ({exc}); it is refused because unpickling runs "
            "arbitrary code: save it as a plain numeric array (np.save with a numeric dtype)",
        ) from None
    except Exception as exc:
        raise DataError(path, f"unreadable .npy file ({exc.__class__.__name__}: {exc})") from None
    if not isinstance(arr, np.ndarray):
        raise DataError(path, "expected a single .npy array (not an .npz archive)")
    return arr


def read_frame_mask_npy(path: str | Path) -> np.ndarray:
    """ShanghaiTech ``test_frame_mask/<clip>.npy``: per-frame 0/1 -> (T,) uint8."""
    path = Path(path)
    a = load_npy(path)
    if a.ndim != 1 or not (np.issubdtype(a.dtype, np.number) or a.dtype == bool):
        raise DataError(path, f"expected a 1-D array of per-frame 0/1 labels, got {a.dtype} of shape {a.shape}")
    if a.size and not np.all((a == 0) | (a == 1)):
        raise DataError(path, "expected per-frame labels of 0 or 1 only")
    return a.astype(np.uint8)


class ArrayMasks:
    """Pixel masks held in one (T, H, W) array (a memory-mapped .npy); non-zero = anomalous."""

    def __init__(self, array: np.ndarray, path: str | Path):
        self.array = array  # (T, H, W), any numeric dtype, usually memory-mapped
        self.path = Path(path)

    def __len__(self) -> int:
        return int(self.array.shape[0])

    def read(self, i: int) -> np.ndarray:
        if not 0 <= i < len(self):
            raise IndexError(f"{self.path}: mask {i} out of range 0..{len(self) - 1}")
        return np.asarray(self.array[i]) != 0


def open_pixel_mask_npy(path: str | Path) -> ArrayMasks:
    """ShanghaiTech ``test_pixel_mask/<clip>.npy``: (T, H, W) masks, memory-mapped."""
    path = Path(path)
    a = load_npy(path, mmap=True)
    if a.ndim != 3 or not (np.issubdtype(a.dtype, np.number) or a.dtype == bool):
        raise DataError(path, f"expected (T, H, W) pixel masks, got {a.dtype} of shape {a.shape}")
    return ArrayMasks(a, path)


# ---------------------------------------------------------------- mask images
def read_mask_image(path: str | Path) -> np.ndarray:
    """One mask image (.png/.bmp/...) -> (H, W) bool, True where any channel is non-zero."""
    path = Path(path)
    data = np.fromfile(path, dtype=np.uint8) if path.is_file() else None
    if data is None or data.size == 0:
        raise DataError(path, "mask image missing or empty")
    img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if img is None:
        raise DataError(path, "unreadable mask image (expected a valid .png/.bmp/.tif)")
    if img.ndim == 3:
        img = img.any(axis=2) if img.shape[2] <= 3 else img[:, :, :3].any(axis=2)
    return img != 0


class FolderMasks:
    """Pixel masks stored as one image per frame, in frame order."""

    def __init__(self, files: Sequence[str | Path]):
        self.files = tuple(Path(f) for f in files)

    def __len__(self) -> int:
        return len(self.files)

    def read(self, i: int) -> np.ndarray:
        if not 0 <= i < len(self.files):
            raise IndexError(f"mask {i} out of range 0..{len(self.files) - 1}")
        return read_mask_image(self.files[i])


# ---------------------------------------------------------------- JSON frame labels
def read_json_frame_labels(path: str | Path) -> list[np.ndarray]:
    """A JSON list with, per clip, a list of per-frame 0/1 labels. Pickles are refused, not read."""
    path = Path(path)
    _check_file(path, "ground-truth file")
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(
            path, f"expected JSON (a list of per-clip lists of 0/1 frame labels); not readable as JSON ({exc})"
        ) from None
    if not isinstance(obj, list) or not all(isinstance(c, list) for c in obj):
        raise DataError(path, "expected a JSON list with one list of 0/1 frame labels per clip")
    out = []
    for k, c in enumerate(obj):
        if not all(isinstance(v, (int, bool)) and v in (0, 1) for v in c):
            raise DataError(path, f"clip entry {k + 1}: expected only 0/1 frame labels")
        out.append(np.asarray(c, np.uint8).reshape(-1))
    return out


def labels_to_intervals(labels: np.ndarray) -> list[tuple[int, int]]:
    """Runs of 1 in a 0/1 array as (start, end), 1-based, inclusive (the ``gt`` convention)."""
    x = np.concatenate([[0], np.asarray(labels).astype(np.int8), [0]])
    d = np.diff(x)
    starts, ends = np.flatnonzero(d == 1), np.flatnonzero(d == -1)
    return [(int(a) + 1, int(b)) for a, b in zip(starts, ends)]


def write_mat_intervals(path: str | Path, intervals: list[list[tuple[int, int]]], header: str) -> None:
    """Write ``gt`` = 1xK cell of 2xM int32 [start; end] (1-based, inclusive), one entry per test clip,
    as the frames layout reads it. ``header`` replaces scipy's text header (which holds the time of
    writing), so the same intervals give the same bytes."""
    import io

    cell = np.empty((1, len(intervals)), dtype=object)
    for i, iv in enumerate(intervals):
        cell[0, i] = np.array(iv, dtype=np.int32).T.reshape(2, -1)
    buf = io.BytesIO()
    savemat(buf, {"gt": cell}, format="5", do_compression=False)
    data = bytearray(buf.getvalue())
    data[:116] = header.encode("ascii")[:116].ljust(116, b" ")
    Path(path).write_bytes(bytes(data))
