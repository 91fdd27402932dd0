"""Dataset layouts: one function per layout, each returning a :class:`DatasetIndex`.

Layouts (``load_dataset`` detects which one ROOT is, or takes ``layout=``):

- ``frames``: ``ROOT/{training,testing}/frames/<clip>/<n>.jpg`` and ``ROOT/<name>.mat`` (``gt``:
  1xK cell, per test clip a 2xM array of [start; end] intervals, 1-based inclusive). Pixel masks
  from ``ROOT/testing/pixel_masks/<clip>/<n>.png`` (same numbering as the frames), or, Ped2-style,
  from ``ROOT/ucsd/TestNNN_gt/`` (the k-th test clip in sorted order is TestNNN, NNN = k).
- ``ucsd``: ``UCSDpedN/Train/TrainNNN/NNN.tif``, ``UCSDpedN/Test/TestNNN/NNN.tif``, the official
  ``UCSDpedN.m`` (in UCSDpedN/ or UCSDpedN/Test/), masks in ``Test/TestNNN_gt/``. ROOT may be
  UCSDpedN or its parent.
- ``avenue``: ``training_videos/NN.avi``, ``testing_videos/NN.avi``,
  ``testing_label_mask/N_label.mat`` (``volLabel``). Only the videos present are read; label files
  of absent videos are ignored.
- ``shanghaitech``: ``training/frames/<clip>/`` (preferred when present) or ``training/videos/*.avi``,
  ``testing/frames/<clip>/``, ``testing/test_frame_mask/<clip>.npy`` (per-frame 0/1),
  ``testing/test_pixel_mask/<clip>.npy`` ((T, H, W), memory-mapped). Only the clips present are read.
- ``folder``: a folder of video files and/or frame folders (or itself one frame folder), split "all".
- ``video``: one video file, split "all".

Checks. Frame counts are exact: a frame folder's frames are counted from its file names, which
must be numbered consecutively from 0 or 1 (a gap is an error), and every file is checked cheaply
(not empty, a JPEG ends with its end-of-image marker) and the first frame is decoded. A video is
counted by decoding every frame (a video shorter than its header says is refused). Labels must
match frame counts exactly, one label entry per clip. With ``deep=True`` every frame and every
pixel mask is decoded too (sizes must agree) and a video whose decoder reports any error is refused.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np

from amsrc.data import groundtruth as gtio
from amsrc.data.index import FRAME_EXTS, SPLITS, VIDEO_EXTS, Clip, DatasetIndex, MaskSource
from amsrc.data.readers import (
    FolderReader,
    VideoReader,
    check_image_file,
    check_jpeg_data,
    count_video_frames,
    read_image,
)
from amsrc.errors import ConfigError, DataError

LAYOUTS = ("frames", "ucsd", "avenue", "shanghaitech", "folder", "video")
UCSD_FPS = 10.0  # UCSD Ped1/Ped2 were recorded at 10 frames/s (the dataset's own description)
DATASET_FILE = "dataset.json"  # a dataset's own facts, e.g. {"fps": 10}: written by `data synth` and `data inject`

_NUMBERED = re.compile(r"^(.*?)(\d+)$")


# ---------------------------------------------------------------- helpers
def natural_key(name: str) -> tuple:
    """Sort key that orders "2" before "10" and "Test2" before "Test10"."""
    return tuple(int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name))


def _visible(p: Path) -> bool:
    return not p.name.startswith((".", "_"))


def _subdirs(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir() if p.is_dir() and _visible(p)), key=lambda p: natural_key(p.name))


def _files(folder: Path, exts: tuple[str, ...]) -> list[Path]:
    return sorted(
        (p for p in folder.iterdir() if p.is_file() and _visible(p) and p.suffix.lower() in exts),
        key=lambda p: natural_key(p.name),
    )


def _require_dir(path: Path, expected: str) -> Path:
    if not path.is_dir():
        raise DataError(path, f"missing split folder; expected {expected}")
    return path


def list_numbered_files(folder: Path, exts: tuple[str, ...] = FRAME_EXTS, what: str = "frame") -> tuple[Path, ...]:
    """The image files of a frame (or mask) folder in frame order.

    Names must end in a number (``000.jpg``, ``frame001.png``) with one common prefix, and the
    numbers must run consecutively from 0 or 1: a gap, a duplicate or an unnumbered file is an
    error, so no frame is ever silently dropped. Hidden files and other file types are ignored.
    """
    if not folder.is_dir():
        raise DataError(folder, f"{what} folder not found")
    files = [p for p in folder.iterdir() if p.is_file() and _visible(p) and p.suffix.lower() in exts]
    if not files:
        raise DataError(folder, f"empty clip: no {what} images ({'/'.join(exts)}) in this folder")
    numbered: list[tuple[int, Path]] = []
    prefixes = set()
    for p in files:
        m = _NUMBERED.match(p.stem)
        if m is None:
            raise DataError(p, f"expected {what} files named by number (e.g. 000.jpg, frame001.png)")
        prefixes.add(m.group(1))
        numbered.append((int(m.group(2)), p))
    if len(prefixes) > 1:
        raise DataError(folder, f"{what} files have mixed name prefixes {sorted(prefixes)}; expected one numbering")
    numbered.sort(key=lambda t: t[0])
    first = numbered[0][0]
    if first not in (0, 1):
        raise DataError(numbered[0][1], f"{what} numbering starts at {first}; expected 0 or 1 (missing first {what}s?)")
    for k, (num, p) in enumerate(numbered):
        if num != first + k:
            if num == first + k - 1:
                raise DataError(p, f"two {what} files share number {num}")
            raise DataError(
                p, f"gap in {what} numbering: {numbered[k - 1][1].name} is followed by {p.name} (numbers must be consecutive)"
            )
    return tuple(p for _, p in numbered)


def _check_frames(files: tuple[Path, ...], deep: bool) -> None:
    for f in files:
        check_image_file(f)
    if deep:
        for f in files:
            if f.suffix.lower() in (".jpg", ".jpeg"):
                check_jpeg_data(f)
        for _ in FolderReader(files).iter_frames():
            pass
    else:
        read_image(files[0])


def dataset_fps(folder: Path, levels: int = 3) -> tuple[float, Path] | None:
    """The frame rate a frame folder's dataset states (``fps`` in a ``dataset.json`` in the folder or
    up to ``levels`` folders above it, e.g. ``ROOT/dataset.json`` for ``ROOT/testing/frames/01``) and
    that file; None where no such file says. A file that is not JSON or whose fps is not a positive
    number is an error naming it."""
    folder = Path(folder).absolute()
    for d in [folder, *list(folder.parents)[:levels]]:
        f = d / DATASET_FILE
        if f.is_file():
            try:
                fps = json.loads(f.read_text()).get("fps")
            except (ValueError, AttributeError, OSError) as exc:
                raise DataError(f, f"expected a JSON object such as {{\"fps\": 10}} ({exc})") from None
            if fps is None:
                return None
            if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not (math.isfinite(fps) and fps > 0):
                raise DataError(f, f"fps must be a number > 0, got {fps!r}")
            return float(fps), f
    return None


def write_dataset_file(root: Path, fps: float | None, written_by: str) -> None:
    """``ROOT/dataset.json``: the facts of a dataset that its frames cannot tell (the frame rate)."""
    (Path(root) / DATASET_FILE).write_text(json.dumps({"fps": fps, "written_by": written_by}, indent=1) + "\n")


def frame_folder_clip(folder: Path, split: str, name: str | None = None, deep: bool = False,
                      fps: float | None = None) -> Clip:
    """A clip from a frame folder: exact count, cheap checks of every file, first frame decoded. Its
    fps: ``fps``, else what its dataset's ``dataset.json`` says, else None (unknown)."""
    files = list_numbered_files(folder)
    _check_frames(files, deep)
    if fps is None:
        found = dataset_fps(folder)
        fps = None if found is None else found[0]
    return Clip(name=name or folder.name, split=split, source=folder, n_frames=len(files), frame_files=files, fps=fps)


def video_clip(path: Path, split: str, name: str | None = None, deep: bool = False) -> Clip:
    """A clip from a video file, its frames counted by decoding."""
    n, fps, _ = count_video_frames(path, strict=deep)
    return Clip(name=name or path.stem, split=split, source=path, n_frames=n, fps=fps)


def _with(clip: Clip, labels: np.ndarray | None = None, masks: MaskSource | None = None) -> Clip:
    return Clip(
        name=clip.name,
        split=clip.split,
        source=clip.source,
        n_frames=clip.n_frames,
        frame_files=clip.frame_files,
        labels=labels if labels is not None else clip.labels,
        masks=masks if masks is not None else clip.masks,
        fps=clip.fps,
    )


def source_frame_size(source: str | Path) -> tuple[int, int]:
    """(H, W) of the first frame of a frame folder (:func:`list_numbered_files`) or of a video file,
    decoding one frame."""
    path = Path(source)
    if path.is_dir():
        return tuple(read_image(list_numbered_files(path)[0]).shape[:2])
    if not path.is_file():
        raise DataError(path, "not found: the frame size of a clip is read from its source")
    reader = VideoReader(path)
    try:
        return tuple(reader.shape)
    finally:
        reader.close()


def _clip_shape(clip: Clip) -> tuple[int, int]:
    if clip.frame_files is not None:
        return read_image(clip.frame_files[0]).shape[:2]
    return count_video_frames(clip.source)[2]


def _check_mask_source(clip: Clip, masks: MaskSource, where: Path, deep: bool) -> None:
    if len(masks) != clip.n_frames:
        raise DataError(
            where, f"{len(masks)} pixel masks for clip {clip.name}, which has {clip.n_frames} frames (expected equal)"
        )
    if deep:
        shape = _clip_shape(clip)
        for i in range(len(masks)):
            m = masks.read(i)
            if m.shape != shape:
                raise DataError(where, f"mask {i} of clip {clip.name} is {m.shape}, the frames are {shape}")


def _match_entries(clips: list[Clip], entries: list, gt_path: Path, split_dir: Path) -> None:
    if len(entries) > len(clips):
        raise DataError(
            gt_path,
            f"has ground truth for {len(entries)} clips but {split_dir} holds {len(clips)}: "
            f"labels for clip(s) that do not exist (entries {len(clips) + 1}..{len(entries)})",
        )
    if len(entries) < len(clips):
        missing = ", ".join(c.name for c in clips[len(entries) :])
        raise DataError(
            gt_path,
            f"has ground truth for {len(entries)} clips but {split_dir} holds {len(clips)}: "
            f"clip(s) without labels: {missing}",
        )


def _labels_from_entry(entry: np.ndarray, kind: str, clip: Clip, gt_path: Path) -> np.ndarray:
    if kind == "intervals":
        return gtio.intervals_to_labels(entry, clip.n_frames, gt_path, clip.name)
    if kind == "frames":
        return gtio.frames_to_labels(entry, clip.n_frames, gt_path, clip.name)
    if len(entry) != clip.n_frames:  # per-frame list
        raise DataError(
            gt_path, f"clip {clip.name}: {len(entry)} frame labels but the clip has {clip.n_frames} frames (expected equal)"
        )
    return entry


# ---------------------------------------------------------------- frames layout
def _find_frames_gt(root: Path) -> Path | None:
    """The ground-truth file of a frames-layout ROOT: ``<ROOT name>.mat``, else the only .mat,
    else one JSON/pickle file named like ground truth (gt*, *label*, <ROOT name>.json)."""
    mats = [p for p in root.iterdir() if p.is_file() and _visible(p) and p.suffix.lower() == ".mat"]
    named = [p for p in mats if p.stem.lower() == root.name.lower()]
    if named:
        return named[0]
    if len(mats) == 1:
        return mats[0]
    if len(mats) > 1:
        raise DataError(root, f"several .mat files {[p.name for p in mats]}; expected one, or one named {root.name}.mat")
    others = [p for p in root.iterdir() if p.is_file() and _visible(p)]
    demo = root / "ground_truth_demo" / "gt_label.json"  # HF2-VAD's place
    if demo.is_file():
        others.append(demo)
    cands = [
        p
        for p in others
        if p.suffix.lower() in (".json",) + gtio.PICKLE_SUFFIXES
        and (p.stem.lower().startswith("gt") or "label" in p.stem.lower() or p.stem.lower() == root.name.lower())
    ]
    if len(cands) > 1:
        raise DataError(root, f"several ground-truth candidates {[p.name for p in cands]}; expected one")
    return cands[0] if cands else None


def _read_frames_gt(path: Path) -> tuple[list[np.ndarray], str]:
    gtio.refuse_pickle(path)
    if path.suffix.lower() == ".mat":
        return gtio.read_mat_intervals(path), "intervals"
    if path.suffix.lower() == ".json":
        return gtio.read_json_frame_labels(path), "per_frame"
    raise DataError(path, "expected ground truth as .mat (gt intervals) or .json (per-clip 0/1 lists)")


def _ucsd_mask_folders(ucsd_dir: Path) -> dict[int, Path]:
    out = {}
    for d in _subdirs(ucsd_dir):
        m = re.fullmatch(r"Test(\d+)_gt", d.name)
        if m:
            out[int(m.group(1))] = d
    return out


def load_frames(root: Path, deep: bool = False) -> DatasetIndex:
    """The frames layout (``ROOT/{training,testing}/frames/<clip>/``, ``ROOT/<name>.mat``)."""
    split_dirs = {
        s: _require_dir(root / s / "frames", f"{root}/{s}/frames/<clip>/<n>.jpg") for s in SPLITS
    }
    splits: dict[str, tuple[Clip, ...]] = {}
    for split, d in split_dirs.items():
        dirs = _subdirs(d)
        if not dirs:
            raise DataError(d, "no clip folders; expected <clip>/<n>.jpg inside")
        splits[split] = tuple(frame_folder_clip(c, split, deep=deep) for c in dirs)

    test = list(splits["testing"])
    gt_path = _find_frames_gt(root)
    if gt_path is not None:
        entries, kind = _read_frames_gt(gt_path)
        _match_entries(test, entries, gt_path, split_dirs["testing"])
        test = [_with(c, labels=_labels_from_entry(e, kind, c, gt_path)) for c, e in zip(test, entries)]

    mask_dir = root / "testing" / "pixel_masks"
    ucsd_dir = root / "ucsd"
    if mask_dir.is_dir():
        names = {c.name for c in test}
        for d in _subdirs(mask_dir):
            if d.name not in names:
                raise DataError(d, f"pixel masks for clip {d.name}, which is not in {split_dirs['testing']}")
        for k, c in enumerate(test):
            d = mask_dir / c.name
            if d.is_dir():
                masks = gtio.FolderMasks(list_numbered_files(d, what="mask"))
                _check_mask_source(c, masks, d, deep)
                test[k] = _with(c, masks=masks)
    elif ucsd_dir.is_dir():
        folders = _ucsd_mask_folders(ucsd_dir)
        for num, d in folders.items():
            if not 1 <= num <= len(test):
                raise DataError(d, f"masks for test clip {num}, but there are {len(test)} test clips")
        for k, c in enumerate(test):
            d = folders.get(k + 1)
            if d is not None:
                masks = gtio.FolderMasks(list_numbered_files(d, what="mask"))
                _check_mask_source(c, masks, d, deep)
                test[k] = _with(c, masks=masks)
    splits["testing"] = tuple(test)
    return DatasetIndex(root=root, layout="frames", splits=splits)


# ---------------------------------------------------------------- official UCSD layout
def _ucsd_root(root: Path) -> Path:
    if (root / "Train").is_dir() or (root / "Test").is_dir():
        return root
    cands = [d for d in _subdirs(root) if re.fullmatch(r"UCSDped\w*", d.name) and ((d / "Train").is_dir() or (d / "Test").is_dir())]
    if len(cands) == 1:
        return cands[0]
    if len(cands) > 1:
        raise DataError(root, f"holds several UCSD subsets {[d.name for d in cands]}; name one of them")
    raise DataError(root, "expected UCSDpedN/Train/TrainNNN/ and UCSDpedN/Test/TestNNN/ (or ROOT = UCSDpedN)")


def _find_ucsd_m(base: Path) -> Path | None:
    cands = []
    for d in (base, base / "Test"):
        if d.is_dir():
            cands += [p for p in d.iterdir() if p.is_file() and _visible(p) and p.suffix.lower() == ".m"]
    named = [p for p in cands if p.stem.lower() == base.name.lower()]
    if named:
        return named[0]
    if len(cands) > 1:
        raise DataError(base, f"several .m files {[p.name for p in cands]}; expected one named {base.name}.m")
    return cands[0] if cands else None


def load_ucsd(root: Path, deep: bool = False) -> DatasetIndex:
    """The official UCSD layout (``UCSDpedN/{Train,Test}/...``, ``UCSDpedN.m``, ``TestNNN_gt``)."""
    base = _ucsd_root(root)
    train_dir = _require_dir(base / "Train", f"{base}/Train/TrainNNN/NNN.tif")
    test_dir = _require_dir(base / "Test", f"{base}/Test/TestNNN/NNN.tif")
    splits: dict[str, tuple[Clip, ...]] = {}
    for split, d, pat in (("training", train_dir, r"Train\d+"), ("testing", test_dir, r"Test\d+")):
        dirs = [c for c in _subdirs(d) if re.fullmatch(pat, c.name)]
        if not dirs:
            raise DataError(d, f"no clip folders matching {pat.replace(chr(92) + 'd+', 'NNN')}")
        splits[split] = tuple(frame_folder_clip(c, split, deep=deep, fps=UCSD_FPS) for c in dirs)

    test = list(splits["testing"])
    m_path = _find_ucsd_m(base)
    if m_path is not None:
        entries = gtio.read_ucsd_m(m_path)
        _match_entries(test, entries, m_path, test_dir)
        test = [_with(c, labels=_labels_from_entry(e, "frames", c, m_path)) for c, e in zip(test, entries)]
    names = {c.name for c in test}
    for d in _subdirs(test_dir):
        if d.name.endswith("_gt") and d.name[: -len("_gt")] not in names:
            raise DataError(d, f"masks for clip {d.name[:-3]}, which is not in {test_dir}")
    for k, c in enumerate(test):
        d = test_dir / f"{c.name}_gt"
        if d.is_dir():
            masks = gtio.FolderMasks(list_numbered_files(d, what="mask"))
            _check_mask_source(c, masks, d, deep)
            test[k] = _with(c, masks=masks)
    splits["testing"] = tuple(test)
    return DatasetIndex(root=root, layout="ucsd", splits=splits)


# ---------------------------------------------------------------- CUHK Avenue
def load_avenue(root: Path, deep: bool = False) -> DatasetIndex:
    """CUHK Avenue (``training_videos/NN.avi``, ``testing_videos/NN.avi``, ``testing_label_mask/N_label.mat``)."""
    dirs = {
        "training": _require_dir(root / "training_videos", f"{root}/training_videos/NN.avi"),
        "testing": _require_dir(root / "testing_videos", f"{root}/testing_videos/NN.avi"),
    }
    splits: dict[str, tuple[Clip, ...]] = {}
    for split, d in dirs.items():
        vids = _files(d, VIDEO_EXTS)
        if not vids:
            raise DataError(d, f"no video files ({'/'.join(VIDEO_EXTS)})")
        splits[split] = tuple(video_clip(v, split, deep=deep) for v in vids)

    label_dir = root / "testing_label_mask"
    if label_dir.is_dir():
        test = []
        for c in splits["testing"]:
            m = re.fullmatch(r"0*(\d+)", c.name)
            if m is None:
                raise DataError(c.source, "expected a numbered test video (NN.avi) to find its N_label.mat")
            lab = label_dir / f"{int(m.group(1))}_label.mat"
            if not lab.is_file():
                raise DataError(lab, f"missing: test clip {c.name} ({c.source.name}) has no labels")
            labels, shape = gtio.vol_label_frame_labels(lab)
            if len(labels) != c.n_frames:
                raise DataError(
                    lab, f"{len(labels)} masks in volLabel but {c.source.name} has {c.n_frames} frames (expected equal)"
                )
            vshape = VideoReader(c.source, c.n_frames).shape if deep else None
            if vshape is not None and tuple(vshape) != tuple(shape):
                raise DataError(lab, f"masks are {shape}, the video frames are {vshape}")
            test.append(_with(c, labels=labels, masks=gtio.VolLabelMasks(lab, len(labels), shape)))
        splits["testing"] = tuple(test)
    return DatasetIndex(root=root, layout="avenue", splits=splits)


# ---------------------------------------------------------------- ShanghaiTech
def load_shanghaitech(root: Path, deep: bool = False) -> DatasetIndex:
    """ShanghaiTech (``training/{frames,videos}``, ``testing/frames``, ``testing/test_{frame,pixel}_mask``)."""
    splits: dict[str, tuple[Clip, ...]] = {}
    tr_frames, tr_videos = root / "training" / "frames", root / "training" / "videos"
    if tr_frames.is_dir():
        dirs = _subdirs(tr_frames)
        if not dirs:
            raise DataError(tr_frames, "no clip folders; expected <clip>/<n>.jpg inside")
        splits["training"] = tuple(frame_folder_clip(c, "training", deep=deep) for c in dirs)
    elif tr_videos.is_dir():
        vids = _files(tr_videos, VIDEO_EXTS)
        if not vids:
            raise DataError(tr_videos, f"no video files ({'/'.join(VIDEO_EXTS)})")
        splits["training"] = tuple(video_clip(v, "training", deep=deep) for v in vids)
    else:
        raise DataError(root / "training", "missing split folder; expected training/videos/*.avi or training/frames/<clip>/")
    te = _require_dir(root / "testing" / "frames", f"{root}/testing/frames/<clip>/<n>.jpg")
    dirs = _subdirs(te)
    if not dirs:
        raise DataError(te, "no clip folders; expected <clip>/<n>.jpg inside")
    test = [frame_folder_clip(c, "testing", deep=deep) for c in dirs]

    fm_dir = root / "testing" / "test_frame_mask"
    pm_dir = root / "testing" / "test_pixel_mask"
    for k, c in enumerate(test):
        labels = masks = None
        if fm_dir.is_dir():
            f = fm_dir / f"{c.name}.npy"
            if not f.is_file():
                raise DataError(f, f"missing: test clip {c.name} has no frame labels")
            labels = gtio.read_frame_mask_npy(f)
            if len(labels) != c.n_frames:
                raise DataError(f, f"{len(labels)} frame labels but clip {c.name} has {c.n_frames} frames (expected equal)")
        if pm_dir.is_dir():
            f = pm_dir / f"{c.name}.npy"
            if f.is_file():
                masks = gtio.open_pixel_mask_npy(f)
                _check_mask_source(c, masks, f, deep=False)
                shape = read_image(c.frame_files[0]).shape[:2]
                if masks.array.shape[1:] != shape:
                    raise DataError(f, f"masks are {masks.array.shape[1:]}, the frames of {c.name} are {shape}")
        test[k] = _with(c, labels=labels, masks=masks)
    splits["testing"] = tuple(test)
    return DatasetIndex(root=root, layout="shanghaitech", splits=splits)


# ---------------------------------------------------------------- unlabelled footage
def load_folder(root: Path, deep: bool = False) -> DatasetIndex:
    """A folder of video files and/or frame folders (each one clip), or itself one frame folder. Split "all"."""
    if not root.is_dir():
        raise DataError(root, "expected a folder of videos or frame folders")
    vids = _files(root, VIDEO_EXTS)
    dirs = _subdirs(root)
    images = _files(root, FRAME_EXTS)
    if images and not vids and not dirs:
        return DatasetIndex(root=root, layout="folder", splits={"all": (frame_folder_clip(root, "all", deep=deep),)})
    if not vids and not dirs:
        raise DataError(root, f"no video files ({'/'.join(VIDEO_EXTS)}) or frame folders found")
    if images:
        raise DataError(
            root, f"holds loose frame images ({images[0].name}, ...) beside clips; expected either one frame "
            "folder or a folder of videos / frame folders (move the images into a clip folder)"
        )
    clips = [video_clip(v, "all", deep=deep) for v in vids]
    clips += [frame_folder_clip(d, "all", deep=deep) for d in dirs]
    names = [c.name for c in clips]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise DataError(root, f"clip names {dup} occur twice (a video and a frame folder share a name)")
    clips.sort(key=lambda c: natural_key(c.name))
    return DatasetIndex(root=root, layout="folder", splits={"all": tuple(clips)})


def load_video(path: Path, deep: bool = False) -> DatasetIndex:
    """One video file as one clip, split "all"."""
    if not path.is_file():
        raise DataError(path, "video file not found")
    if path.suffix.lower() not in VIDEO_EXTS:
        raise DataError(path, f"expected a video file ({'/'.join(VIDEO_EXTS)})")
    return DatasetIndex(root=path, layout="video", splits={"all": (video_clip(path, "all", deep=deep),)})


_LOADERS: dict[str, Callable[[Path, bool], DatasetIndex]] = {
    "frames": load_frames,
    "ucsd": load_ucsd,
    "avenue": load_avenue,
    "shanghaitech": load_shanghaitech,
    "folder": load_folder,
    "video": load_video,
}


# ---------------------------------------------------------------- detection and entry point
def detect_layout(root: Path) -> str:
    """Name the layout of ``root`` from the folders it holds (no decoding)."""
    root = Path(root)
    if not root.exists():
        raise DataError(root, "not found")
    if root.is_file():
        if root.suffix.lower() in VIDEO_EXTS:
            return "video"
        raise DataError(root, f"expected a dataset folder or a video file ({'/'.join(VIDEO_EXTS)})")
    has = lambda *parts: root.joinpath(*parts).is_dir()  # noqa: E731
    if has("training_videos") or has("testing_videos") or has("testing_label_mask"):
        return "avenue"
    if has("testing", "test_frame_mask") or has("testing", "test_pixel_mask") or has("training", "videos"):
        return "shanghaitech"
    if has("training", "frames") or has("testing", "frames"):
        return "frames"
    if has("Train") or has("Test") or any(
        re.fullmatch(r"UCSDped\w*", d.name) and (has(d.name, "Train") or has(d.name, "Test")) for d in _subdirs(root)
    ):
        return "ucsd"
    if has("training") or has("testing"):
        # looks like a dataset root whose frames/videos folders are missing
        raise DataError(
            root,
            "has training/ or testing/ but no known layout inside; expected training/frames/<clip>/ "
            "(frames layout) or training/videos/ + testing/test_frame_mask/ (ShanghaiTech)",
        )
    return "folder"


def load_dataset(root: Path, layout: str | None = None, *, deep: bool = False) -> DatasetIndex:
    """Index the dataset at ``root``: detect its layout (or use ``layout``) and read clips, exact
    frame counts, frame labels and pixel masks. ``deep`` decodes every frame and mask as well."""
    root = Path(root)
    if layout is None:
        layout = detect_layout(root)
    elif layout not in _LOADERS:
        raise ConfigError(f"unknown layout '{layout}'; expected one of {', '.join(LAYOUTS)}")
    elif not root.exists():
        raise DataError(root, "not found")
    return _LOADERS[layout](root, deep)


def normal_clips(source: Path) -> list[Clip]:
    """The normal clips of a source (a dataset root, a folder of videos or frame folders, one video
    or one frame folder): its "training" split, else its "all" split; DataError when it has neither."""
    idx = load_dataset(Path(source))
    for split in ("training", "all"):
        if idx.clips(split):
            return list(idx.clips(split))
    raise DataError(Path(source), f"holds no normal clips (splits: {sorted(idx.splits)})")
