"""Dataset layouts: exact counts on real Ped2 and on generated data in every layout; bad input."""

from __future__ import annotations

import json
import pickle
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import scipy.io as sio

from amsrc.cli import main
from amsrc.data import groundtruth as gtio
from amsrc.data.layouts import detect_layout, load_dataset
from amsrc.data.readers import open_clip
from amsrc.errors import ConfigError, DataError
from helpers_video import (
    labels_from_intervals,
    make_frames,
    masks_for,
    mat_cell,
    write_image_folder,
    write_mask_folder,
    write_video,
)

PED2 = Path(__file__).resolve().parents[2] / "shared" / "data" / "ped2"
if not PED2.is_dir():
    PED2 = Path("/work/shared/data/ped2")
needs_ped2 = pytest.mark.skipif(not (PED2 / "ped2.mat").is_file(), reason="real Ped2 not available")


def check_cli(root: Path, capsys, *extra: str) -> dict[str, tuple[int, int, int | None]]:
    """Run `amsrc data check` and parse its per-split lines into (clips, frames, anomalous)."""
    assert main(["data", "check", str(root), *extra]) == 0
    out = capsys.readouterr().out
    layout = re.search(r": layout (\w+)", out).group(1)
    rows = {}
    for m in re.finditer(r"^\s+(\w+)\s+(\d+) clips\s+(\d+) frames\s+(?:(\d+) anomalous|unlabelled)", out, re.M):
        rows[m.group(1)] = (int(m.group(2)), int(m.group(3)), None if m.group(4) is None else int(m.group(4)))
    rows["layout"] = layout
    return rows


def check_fails(root: Path, capsys, *needles: str, extra: tuple[str, ...] = ()) -> str:
    """`amsrc data check` exits 2 with "error:" and every needle on stderr."""
    assert main(["data", "check", str(root), *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:"), err
    for n in needles:
        assert n in err, (n, err)
    return err


# ================================================================ real Ped2
@needs_ped2
def test_ped2_counts_labels_masks():
    idx = load_dataset(PED2)
    assert idx.layout == "frames"
    s = idx.summary()
    assert s["training"] == {"clips": 16, "frames": 2550, "anomalous": None}
    assert s["testing"] == {"clips": 12, "frames": 2010, "anomalous": 1648}
    test = idx.clips("testing")
    assert [c.n_frames for c in test] == [180, 180, 150, 180, 150, 180, 180, 180, 120, 150, 180, 180]
    assert [c.name for c in test] == [f"{k:02d}" for k in range(1, 13)]

    # ped2.mat agrees with the official UCSDped2.m on every frame
    official = gtio.read_ucsd_m(PED2 / "ucsd" / "UCSDped2.m")
    assert len(official) == 12
    for c, frames in zip(test, official):
        ref = gtio.frames_to_labels(frames, c.n_frames, "UCSDped2.m", c.name)
        np.testing.assert_array_equal(c.labels, ref)

    # and with the official pixel masks: a frame is anomalous iff its mask has a non-zero pixel
    n_checked = 0
    for c in test:
        assert c.masks is not None and len(c.masks) == c.n_frames
        from_masks = np.array([c.masks.read(i).any() for i in range(c.n_frames)], np.uint8)
        np.testing.assert_array_equal(c.labels, from_masks, err_msg=f"clip {c.name}")
        n_checked += c.n_frames
    assert n_checked == 2010
    # masks and frames have the same size
    assert test[0].masks.read(0).shape == open_clip(test[0]).read(0).shape[:2] == (240, 360)


@needs_ped2
def test_ped2_cli(capsys):
    rows = check_cli(PED2, capsys)
    assert rows == {"layout": "frames", "training": (16, 2550, None), "testing": (12, 2010, 1648)}


# ================================================================ generated data, one builder per layout
FR_TRAIN = {"01": 7, "02": 9}
FR_TEST = {"01": 8, "02": 10, "03": 12}
FR_GT = {"01": [(2, 4)], "02": [(1, 3), (7, 10)], "03": []}


def build_frames(tmp: Path, gt: str = "mat", masks: bool = True, ext: str = ".png") -> Path:
    root = tmp / "synth"
    for split, clips in (("training", FR_TRAIN), ("testing", FR_TEST)):
        for k, (name, n) in enumerate(clips.items()):
            write_image_folder(root / split / "frames" / name, make_frames(n, seed=k), ext=ext)
    labels = {name: labels_from_intervals(n, FR_GT[name]) for name, n in FR_TEST.items()}
    if gt == "mat":
        entries = [np.array(FR_GT[name], np.int64).reshape(-1, 2).T for name in FR_TEST]
        sio.savemat(root / "synth.mat", {"gt": mat_cell(entries)})
    elif gt == "json":
        (root / "gt_label.json").write_text(json.dumps([labels[n].tolist() for n in FR_TEST]))
    if masks:
        for name in FR_TEST:
            write_mask_folder(root / "testing" / "pixel_masks" / name, masks_for(labels[name]))
    return root


def test_frames_layout(tmp_path, capsys):
    root = build_frames(tmp_path)
    idx = load_dataset(root)
    assert idx.layout == "frames"
    assert idx.summary() == {
        "training": {"clips": 2, "frames": 16, "anomalous": None},
        "testing": {"clips": 3, "frames": 30, "anomalous": 10},
    }
    for c in idx.clips("testing"):
        ref = labels_from_intervals(FR_TEST[c.name], FR_GT[c.name])
        np.testing.assert_array_equal(c.labels, ref)
        assert c.labels.dtype == np.uint8
        assert [bool(c.masks.read(i).any()) for i in range(c.n_frames)] == ref.astype(bool).tolist()
    assert check_cli(root, capsys) == {"layout": "frames", "training": (2, 16, None), "testing": (3, 30, 10)}
    assert check_cli(root, capsys, "--deep")["testing"] == (3, 30, 10)


def test_frames_layout_json_labels_and_no_labels(tmp_path):
    root = build_frames(tmp_path, gt="json", masks=False)
    idx = load_dataset(root)
    assert idx.summary()["testing"] == {"clips": 3, "frames": 30, "anomalous": 10}
    assert all(c.masks is None for c in idx.clips("testing"))
    (root / "gt_label.json").unlink()
    assert load_dataset(root).summary()["testing"] == {"clips": 3, "frames": 30, "anomalous": None}


def test_frames_layout_ucsd_style_masks(tmp_path):
    root = build_frames(tmp_path, masks=False)
    # Ped2-style: ROOT/ucsd/TestNNN_gt, clip k <-> TestNNN, 1-based names NNN or frameNNN
    for k, name in enumerate(FR_TEST, start=1):
        lab = labels_from_intervals(FR_TEST[name], FR_GT[name])
        write_mask_folder(root / "ucsd" / f"Test{k:03d}_gt", masks_for(lab), ext=".bmp", start=1,
                          prefix="frame" if k == 2 else "")
    idx = load_dataset(root)
    for c in idx.clips("testing"):
        ref = labels_from_intervals(FR_TEST[c.name], FR_GT[c.name])
        assert np.array_equal([c.masks.read(i).any() for i in range(c.n_frames)], ref.astype(bool))


UC_TRAIN = {"Train001": 7, "Train002": 8}
UC_TEST = {"Test001": 9, "Test002": 10, "Test003": 6}
UC_M = """TestVideoFile = {};
% the official file lists one entry per test clip
TestVideoFile{end+1}.gt_frame = [2:4, 6:7];
TestVideoFile{end+1}.gt_frame = [1:3 8:10];
TestVideoFile{end+1}.gt_frame = [4:6];
"""
UC_LABELS = {
    "Test001": labels_from_intervals(9, [(2, 4), (6, 7)]),
    "Test002": labels_from_intervals(10, [(1, 3), (8, 10)]),
    "Test003": labels_from_intervals(6, [(4, 6)]),
}


def build_ucsd(tmp: Path, m_text: str = UC_M) -> Path:
    base = tmp / "UCSD_Anomaly_Dataset.v1p2" / "UCSDped9"
    for k, (name, n) in enumerate(UC_TRAIN.items()):
        write_image_folder(base / "Train" / name, make_frames(n, seed=k)[..., 0:1].repeat(3, 2), ext=".tif", start=1)
    for k, (name, n) in enumerate(UC_TEST.items()):
        write_image_folder(base / "Test" / name, make_frames(n, seed=10 + k), ext=".tif", start=1)
    write_mask_folder(base / "Test" / "Test001_gt", masks_for(UC_LABELS["Test001"]), ext=".bmp", start=1)
    write_mask_folder(base / "Test" / "Test003_gt", masks_for(UC_LABELS["Test003"]), ext=".bmp", start=1,
                      prefix="frame")
    (base / "Test" / "UCSDped9.m").write_text(m_text)
    (base / "Test" / ".DS_Store").write_bytes(b"\0\1")  # hidden junk is ignored
    return base


def test_ucsd_layout(tmp_path, capsys):
    base = build_ucsd(tmp_path)
    for root in (base, base.parent):
        idx = load_dataset(root)
        assert idx.layout == "ucsd"
        assert idx.summary() == {
            "training": {"clips": 2, "frames": 15, "anomalous": None},
            "testing": {"clips": 3, "frames": 25, "anomalous": 14},
        }
        test = {c.name: c for c in idx.clips("testing")}
        for name, ref in UC_LABELS.items():
            np.testing.assert_array_equal(test[name].labels, ref)
        assert test["Test002"].masks is None
        for name in ("Test001", "Test003"):
            c = test[name]
            assert np.array_equal([c.masks.read(i).any() for i in range(c.n_frames)], UC_LABELS[name].astype(bool))
    assert check_cli(base.parent, capsys, "--deep") == {
        "layout": "ucsd", "training": (2, 15, None), "testing": (3, 25, 14)}


def test_ucsd_m_parser(tmp_path):
    p = tmp_path / "x.m"
    p.write_text("TestVideoFile = {};\nTestVideoFile{end+1}.gt_frame = [5:2:9, 12];\n"
                 "TestVideoFile{end+1}.gt_frame = [ 1 : 3 ,  2:4 ];  % overlap\nTestVideoFile{end+1}.gt_frame = [];\n")
    got = gtio.read_ucsd_m(p)
    assert [g.tolist() for g in got] == [[5, 7, 9, 12], [1, 2, 3, 4], []]
    p.write_text("TestVideoFile{end+1}.gt_frame = [1:3];\nTestVideoFile{end+1}.gt_frame = ones(1, 4);\n")
    with pytest.raises(DataError, match="expected form"):
        gtio.read_ucsd_m(p)


AV_TRAIN = {"01": 9, "02": 7}
AV_TEST = {"01": 10, "02": 8}
AV_LABELS = {"01": labels_from_intervals(10, [(3, 5)]), "02": labels_from_intervals(8, [(8, 8)])}


def write_vol_label(path: Path, labels: np.ndarray, h: int = 48, w: int = 64) -> None:
    masks = masks_for(labels, h, w).astype(np.uint8)
    sio.savemat(path, {"volLabel": mat_cell(list(masks))})


def build_avenue(tmp: Path) -> Path:
    root = tmp / "avenue"
    for k, (name, n) in enumerate(AV_TRAIN.items()):
        write_video(root / "training_videos" / f"{name}.avi", make_frames(n, seed=k), codec="mjpeg")
    for k, (name, n) in enumerate(AV_TEST.items()):
        write_video(root / "testing_videos" / f"{name}.avi", make_frames(n, seed=5 + k), codec="mpeg4")
    (root / "testing_label_mask").mkdir()
    for name, lab in AV_LABELS.items():
        write_vol_label(root / "testing_label_mask" / f"{int(name)}_label.mat", lab)
    # labels of a video that is not present are ignored (only the clips present are read)
    write_vol_label(root / "testing_label_mask" / "3_label.mat", labels_from_intervals(5, [(1, 2)]))
    return root


def test_avenue_layout(tmp_path, capsys):
    root = build_avenue(tmp_path)
    idx = load_dataset(root)
    assert idx.layout == "avenue"
    assert idx.summary() == {
        "training": {"clips": 2, "frames": 16, "anomalous": None},
        "testing": {"clips": 2, "frames": 18, "anomalous": 4},
    }
    for c in idx.clips("testing"):
        assert c.is_video and c.fps == 25.0
        np.testing.assert_array_equal(c.labels, AV_LABELS[c.name])
        ref = masks_for(AV_LABELS[c.name])
        for i in range(c.n_frames):
            np.testing.assert_array_equal(c.masks.read(i), ref[i])
    assert check_cli(root, capsys) == {"layout": "avenue", "training": (2, 16, None), "testing": (2, 18, 4)}
    assert check_cli(root, capsys, "--deep")["testing"] == (2, 18, 4)


ST_TRAIN = {"01_001": 8, "02_001": 11}
ST_TEST = {"01_0014": 9, "01_0015": 7}
ST_LABELS = {"01_0014": labels_from_intervals(9, [(4, 9)]), "01_0015": labels_from_intervals(7, [(1, 2)])}


def build_shanghaitech(tmp: Path, train_frames: bool = False) -> Path:
    root = tmp / "shanghaitech"
    for k, (name, n) in enumerate(ST_TRAIN.items()):
        if train_frames:
            write_image_folder(root / "training" / "frames" / name, make_frames(n, seed=k), ext=".jpg")
        else:
            write_video(root / "training" / "videos" / f"{name}.avi", make_frames(n, seed=k), codec="mpeg4")
    (root / "testing" / "test_frame_mask").mkdir(parents=True)
    (root / "testing" / "test_pixel_mask").mkdir(parents=True)
    for k, (name, n) in enumerate(ST_TEST.items()):
        write_image_folder(root / "testing" / "frames" / name, make_frames(n, seed=20 + k), ext=".jpg")
        np.save(root / "testing" / "test_frame_mask" / f"{name}.npy", ST_LABELS[name].astype(np.int64))
        np.save(root / "testing" / "test_pixel_mask" / f"{name}.npy", masks_for(ST_LABELS[name]).astype(np.uint8))
    return root


@pytest.mark.parametrize("train_frames", [False, True])
def test_shanghaitech_layout(tmp_path, capsys, train_frames):
    root = build_shanghaitech(tmp_path, train_frames)
    idx = load_dataset(root)
    assert idx.layout == "shanghaitech"
    assert idx.summary() == {
        "training": {"clips": 2, "frames": 19, "anomalous": None},
        "testing": {"clips": 2, "frames": 16, "anomalous": 8},
    }
    assert all(c.is_video != train_frames for c in idx.clips("training"))
    for c in idx.clips("testing"):
        np.testing.assert_array_equal(c.labels, ST_LABELS[c.name])
        assert isinstance(c.masks.array, np.memmap)
        ref = masks_for(ST_LABELS[c.name])
        assert all(np.array_equal(c.masks.read(i), ref[i]) for i in range(c.n_frames))
    assert check_cli(root, capsys) == {"layout": "shanghaitech", "training": (2, 19, None), "testing": (2, 16, 8)}


def test_folder_and_video_layouts(tmp_path, capsys):
    root = tmp_path / "footage"
    write_video(root / "cam1.avi", make_frames(7), codec="mjpeg")
    write_video(root / "cam2.mp4", make_frames(11, seed=1), codec="mpeg4")
    write_image_folder(root / "cam3", make_frames(6, seed=2), ext=".jpg", start=1)
    (root / "notes.txt").write_text("not a clip")
    idx = load_dataset(root)
    assert idx.layout == "folder"
    assert [(c.name, c.n_frames, c.is_video) for c in idx.clips("all")] == [
        ("cam1", 7, True), ("cam2", 11, True), ("cam3", 6, False)]
    assert idx.summary() == {"all": {"clips": 3, "frames": 24, "anomalous": None}}
    assert check_cli(root, capsys) == {"layout": "folder", "all": (3, 24, None)}

    single = load_dataset(root / "cam3")  # a frame folder on its own
    assert single.layout == "folder" and single.summary()["all"]["frames"] == 6

    vid = load_dataset(root / "cam2.mp4")
    assert vid.layout == "video" and [(c.name, c.n_frames) for c in vid.clips("all")] == [("cam2", 11)]
    assert check_cli(root / "cam1.avi", capsys) == {"layout": "video", "all": (1, 7, None)}


def test_forced_and_unknown_layout(tmp_path, capsys):
    root = build_frames(tmp_path, masks=False)
    assert detect_layout(root) == "frames"
    assert load_dataset(root, layout="frames").summary()["testing"]["anomalous"] == 10
    with pytest.raises(ConfigError, match="unknown layout"):
        load_dataset(root, layout="nope")
    check_fails(root, capsys, "unknown layout", extra=("--layout", "nope"))
    # forcing the wrong layout names the folder it expected
    check_fails(root, capsys, "training_videos", "missing split folder", extra=("--layout", "avenue"))
    check_fails(tmp_path / "does_not_exist", capsys, "does_not_exist", "not found")


# ================================================================ bad input
def _rm(p: Path) -> None:
    shutil.rmtree(p) if p.is_dir() else p.unlink()


def bad_missing_split(tmp):
    root = build_frames(tmp, masks=False)
    _rm(root / "testing" / "frames")
    return root, [str(root / "testing" / "frames"), "missing split folder"]


def bad_missing_split_avenue(tmp):
    root = build_avenue(tmp)
    _rm(root / "training_videos")
    return root, ["training_videos", "missing split folder"]


def bad_label_length_mat(tmp):
    root = build_frames(tmp, masks=False)
    entries = [np.array([[2], [4]]), np.array([[1], [11]]), np.zeros((2, 0))]  # clip 02 has 10 frames
    sio.savemat(root / "synth.mat", {"gt": mat_cell(entries)})
    return root, ["synth.mat", "clip 02", "[1, 11]", "10 frames"]


def bad_label_length_json(tmp):
    root = build_frames(tmp, gt="json", masks=False)
    lab = json.loads((root / "gt_label.json").read_text())
    lab[2] = lab[2][:-1]
    (root / "gt_label.json").write_text(json.dumps(lab))
    return root, ["gt_label.json", "clip 03", "11 frame labels", "12 frames"]


def bad_label_length_avenue(tmp):
    root = build_avenue(tmp)
    write_vol_label(root / "testing_label_mask" / "2_label.mat", np.zeros(9, np.uint8))  # video 02 has 8 frames
    return root, ["2_label.mat", "9 masks", "8 frames"]


def bad_label_length_shanghaitech(tmp):
    root = build_shanghaitech(tmp)
    np.save(root / "testing" / "test_frame_mask" / "01_0015.npy", np.zeros(8, np.uint8))
    return root, ["01_0015.npy", "8 frame labels", "7 frames"]


def bad_mask_count(tmp):
    root = build_frames(tmp)
    _rm(root / "testing" / "pixel_masks" / "03" / "011.png")
    return root, [str(root / "testing" / "pixel_masks" / "03"), "11 pixel masks", "12 frames"]


def bad_unreadable_image(tmp):
    root = build_frames(tmp, masks=False)
    (root / "testing" / "frames" / "02" / "000.png").write_bytes(b"this is not an image" * 10)
    return root, [str(root / "testing" / "frames" / "02" / "000.png"), "unreadable image"]


def bad_empty_image(tmp):
    root = build_frames(tmp, masks=False)
    (root / "training" / "frames" / "01" / "004.png").write_bytes(b"")
    return root, ["004.png", "empty"]


def bad_truncated_jpeg(tmp):
    root = build_shanghaitech(tmp)
    p = root / "testing" / "frames" / "01_0014" / "004.jpg"
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    return root, [str(p), "truncated JPEG"]


def bad_truncated_video(tmp):
    root = build_avenue(tmp)
    p = root / "testing_videos" / "02.avi"
    p.write_bytes(p.read_bytes()[: int(p.stat().st_size * 0.9)])
    return root, [str(p), "truncated"]


def bad_corrupt_video(tmp):
    root = build_shanghaitech(tmp)
    p = root / "training" / "videos" / "02_001.avi"
    p.write_bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    return root, [str(p), "corrupt video"]


def bad_empty_clip(tmp):
    root = build_frames(tmp, masks=False)
    d = root / "testing" / "frames" / "02"
    for f in d.iterdir():
        f.unlink()
    (d / "Thumbs.db").write_bytes(b"x")
    return root, [str(d), "empty clip"]


def bad_gap(tmp):
    root = build_frames(tmp, masks=False)
    _rm(root / "training" / "frames" / "01" / "002.png")  # 000, 001, 003, ...
    return root, [str(root / "training" / "frames" / "01" / "003.png"), "gap in frame numbering"]


def bad_numbering_start(tmp):
    root = build_frames(tmp, masks=False)
    _rm(root / "training" / "frames" / "02" / "000.png")
    _rm(root / "training" / "frames" / "02" / "001.png")
    return root, ["002.png", "starts at 2"]


def bad_extra_gt_entry(tmp):
    root = build_frames(tmp, masks=False)
    entries = [np.array([[2], [4]]), np.array([[1], [3]]), np.zeros((2, 0)), np.array([[1], [2]])]
    sio.savemat(root / "synth.mat", {"gt": mat_cell(entries)})
    return root, ["synth.mat", "4 clips", "holds 3", "do not exist"]


def bad_missing_gt_entry(tmp):
    root = build_frames(tmp, masks=False)
    sio.savemat(root / "synth.mat", {"gt": mat_cell([np.array([[2], [4]]), np.array([[1], [3]])])})
    return root, ["synth.mat", "without labels: 03"]


def bad_extra_m_entry(tmp):
    base = build_ucsd(tmp, UC_M + "TestVideoFile{end+1}.gt_frame = [1:2];\n")
    return base.parent, ["UCSDped9.m", "4 clips", "do not exist"]


def bad_missing_avenue_labels(tmp):
    root = build_avenue(tmp)
    write_video(root / "testing_videos" / "04.avi", make_frames(6), codec="mjpeg")
    return root, ["4_label.mat", "has no labels"]


def bad_missing_shanghaitech_labels(tmp):
    root = build_shanghaitech(tmp)
    _rm(root / "testing" / "test_frame_mask" / "01_0014.npy")
    return root, ["01_0014.npy", "no frame labels"]


def _evil_pickle(marker: Path) -> bytes:
    class Evil:  # unpickling this would create `marker`
        def __reduce__(self):
            return (open, (str(marker), "w"))

    return pickle.dumps([Evil(), [0, 1, 1]], protocol=4)


def bad_pickle_json(tmp):
    root = build_frames(tmp, gt="none", masks=False)
    (root / "gt_label.json").write_bytes(_evil_pickle(tmp / "PWNED"))
    return root, [str(root / "gt_label.json"), "pickle", "never unpickled", "arbitrary code"]


def bad_pickle_mat(tmp):
    root = build_frames(tmp, masks=False)
    (root / "synth.mat").write_bytes(_evil_pickle(tmp / "PWNED"))
    return root, ["synth.mat", "never unpickled"]


def bad_pickle_npy(tmp):
    root = build_shanghaitech(tmp)
    np.save(root / "testing" / "test_frame_mask" / "01_0015.npy", np.array([0, 1, None], dtype=object),
            allow_pickle=True)
    return root, ["01_0015.npy", "unpickling"]


BAD = [v for k, v in sorted(globals().items()) if k.startswith("bad_")]


@pytest.mark.parametrize("make_bad", BAD, ids=[f.__name__[4:] for f in BAD])
def test_bad_input(tmp_path, capsys, make_bad):
    root, needles = make_bad(tmp_path)
    with pytest.raises(DataError) as ei:
        load_dataset(root)
    for n in needles:
        assert n in str(ei.value), (n, str(ei.value))
    assert ei.value.path is not None
    check_fails(root, capsys, *needles)
    assert not (tmp_path / "PWNED").exists()  # a pickle was never unpickled


def test_pickle_never_loaded(tmp_path, monkeypatch):
    def boom(*a, **k):
        raise AssertionError("pickle.load called")

    monkeypatch.setattr(pickle, "load", boom)
    monkeypatch.setattr(pickle, "loads", boom)
    p = tmp_path / "gt_label.json"
    p.write_bytes(_evil_pickle(tmp_path / "PWNED"))
    with pytest.raises(DataError, match="never unpickled"):
        gtio.refuse_pickle(p)
    with pytest.raises(DataError, match="never unpickled"):
        gtio.read_json_frame_labels(p)
    ok = tmp_path / "ok.json"
    ok.write_text("[[0, 1], [1]]")
    gtio.refuse_pickle(ok)  # plain JSON passes
    assert not (tmp_path / "PWNED").exists()


def test_deep_finds_bad_middle_frame(tmp_path, capsys):
    """A corrupt PNG in the middle of a clip: the quick check counts it, --deep and the reader refuse it."""
    root = build_frames(tmp_path, masks=False)
    p = root / "testing" / "frames" / "03" / "007.png"
    p.write_bytes(p.read_bytes()[:100])
    idx = load_dataset(root)
    assert idx.summary()["testing"]["frames"] == 30
    reader = open_clip(idx.clips("testing")[2])
    reader.read(6)
    with pytest.raises(DataError, match="unreadable image"):
        reader.read(7)
    with pytest.raises(DataError, match="007.png"):
        load_dataset(root, deep=True)
    check_fails(root, capsys, str(p), "unreadable image", extra=("--deep",))


def test_mat_gt_formats(tmp_path):
    p = tmp_path / "g.mat"
    # a 2xM array is M intervals; 1x2 is one interval; an empty entry is no anomaly
    sio.savemat(p, {"gt": mat_cell([np.array([[1, 5], [2, 6]]), np.array([[3, 4]]), np.zeros((0, 0))])})
    got = gtio.read_mat_intervals(p)
    assert [g.tolist() for g in got] == [[[1, 2], [5, 6]], [[3, 4]], []]
    sio.savemat(p, {"gt": np.ones((2, 3))})
    with pytest.raises(DataError, match="cell"):
        gtio.read_mat_intervals(p)
    sio.savemat(p, {"labels": mat_cell([np.array([[1], [2]])])})
    with pytest.raises(DataError, match="expected a variable 'gt'"):
        gtio.read_mat_intervals(p)


def test_folder_refuses_loose_images_beside_clips(tmp_path, capsys):
    root = tmp_path / "mixed"
    write_image_folder(root / "clip", make_frames(4), ext=".png")
    write_image_folder(root, make_frames(2), ext=".png", prefix="stray")
    with pytest.raises(DataError, match="loose frame images"):
        load_dataset(root)
    check_fails(root, capsys, str(root), "loose frame images")


def test_frame_rate_from_the_option_the_dataset_file_the_model_or_assumed(tmp_path):
    """A frame folder's times: --fps, else its dataset's dataset.json, else the model's fitted rate,
    else 25 fps said once as assumed; a bad dataset.json is an error naming it."""
    import cv2

    from amsrc.data.layouts import frame_folder_clip
    from amsrc.data.sources import open_source

    folder = tmp_path / "root" / "testing" / "frames" / "01"
    folder.mkdir(parents=True)
    for i in range(3):
        cv2.imwrite(str(folder / f"{i:03d}.png"), np.full((8, 8, 3), 100, np.uint8))
    said: list[str] = []
    src = open_source(str(folder), warn=said.append)
    assert (src.fps, src.fps_assumed, src.rate_text()) == (25.0, True, "25 fps (assumed)")
    assert len(said) == 1 and "no frame rate known" in said[0] and "25 fps (assumed)" in said[0]
    assert [f.time for f in src] == [0.0, 0.04, 0.08]
    said.clear()
    src = open_source(str(folder), warn=said.append, fallback_fps=12.5)
    assert (src.fps, src.fps_origin, said) == (12.5, "the model", [])
    (tmp_path / "root" / "dataset.json").write_text('{"fps": 10}')
    src = open_source(str(folder), warn=said.append, fallback_fps=12.5)
    assert (src.fps, src.fps_origin, said) == (10.0, str(tmp_path / "root" / "dataset.json"), [])
    assert [f.time for f in src] == [0.0, 0.1, 0.2]
    assert frame_folder_clip(folder, "testing").fps == 10.0
    assert open_source(str(folder), fps=5).rate_text() == "5 fps (from --fps)"
    (tmp_path / "root" / "dataset.json").write_text('{"fps": -1}')
    with pytest.raises(DataError, match=r"dataset\.json.*fps must be a number > 0"):
        open_source(str(folder))


def test_a_video_states_its_own_rate_before_its_first_frame(tmp_path):
    """The output header is written before the first frame: a video's rate is read when it is opened."""
    from amsrc.data.sources import open_source

    v = write_video(tmp_path / "v.avi", make_frames(5), fps=30)
    src = open_source(str(v))
    assert (src.fps, src.rate_text()) == (30.0, "30 fps (from the video)")
    assert [round(f.time, 4) for f in src][:3] == [0.0, 0.0333, 0.0667]
