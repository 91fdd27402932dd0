"""`amsrc data inject`: pseudo-anomalies composited into held-out normal clips (frames layout)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from amsrc.cli import main
from amsrc.data.inject import InjectSettings, inject
from amsrc.data.layouts import load_dataset
from amsrc.data.synth import write_scene
from amsrc.errors import ConfigError, DataError


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    """Four normal training clips of a synthetic scene (its test split is not used)."""
    root = tmp_path_factory.mktemp("scene")
    write_scene(root, seed=5, n_train=4, n_test=1, train_frames=100, test_frames=60)
    return root


@pytest.fixture(scope="module")
def fast(scene, tmp_path_factory):
    out = tmp_path_factory.mktemp("inj") / "val"
    res = inject([scene], out, InjectSettings(seed=0, kinds=("fast",), holdout=2), preview=out.parent / "p.png")
    return res, out


def test_fit_clips_are_copied_and_held_out_clips_get_labelled_anomalies(scene, fast):
    res, out = fast
    assert res.fit == ["01", "02"] and res.held_out == ["03", "04"] and not res.reused
    idx = load_dataset(out)
    assert idx.layout == "frames"
    src = load_dataset(scene).clips("training")
    # fit clips: byte for byte the source frames
    for c, s in zip(idx.clips("training"), src[:2]):
        assert [f.read_bytes() for f in c.frame_files] == [f.read_bytes() for f in s.frame_files]
    for c, s in zip(idx.clips("testing"), src[2:]):
        assert c.n_frames == s.n_frames and c.masks is not None
        ev = next(e for e in res.events if e.clip == c.name)
        area = np.array([c.masks.read(t).sum() for t in range(c.n_frames)])
        # a frame is anomalous exactly when >= 20 mask pixels are visible, and the event has frames
        np.testing.assert_array_equal(c.labels, (area >= 20).astype(np.uint8))
        assert c.labels.sum() == len(ev.labelled) >= 10 and 0 < c.labels.sum() < c.n_frames
        for t in range(c.n_frames):
            a = cv2.imread(str(s.frame_files[t])).astype(int)
            b = cv2.imread(str(c.frame_files[t])).astype(int)
            m = c.masks.read(t)
            near = cv2.dilate(m.astype(np.uint8), np.ones((13, 13), np.uint8)).astype(bool)  # soft rim: <= 6 px
            assert np.array_equal(a[~near], b[~near]), t  # untouched away from the pasted object (PNG: lossless)
            if m.sum() >= 20:
                assert np.abs(a[m] - b[m]).mean() > 5, t  # something was pasted where the mask says
    rec = json.loads((out / "inject.json").read_text())
    assert rec["held_out"] == ["03", "04"] and [e["kind"] for e in rec["events"]] == ["fast", "fast"]
    assert 2.0 <= min(e["speed_factor"] for e in rec["events"]) <= max(e["speed_factor"] for e in rec["events"]) <= 4.0
    assert (out.parent / "p.png").stat().st_size > 0 and cv2.imread(str(out.parent / "p.png")).shape[1] > 3 * 240


def test_velocity_scorer_finds_fast_injected_objects(fast, tmp_path):
    from amsrc.config import get_preset
    from amsrc.eval.baselines import BaselineScorer
    from amsrc.eval.metrics import roc_auc
    from amsrc.prepare.run import prepare_dataset
    from amsrc.prepare.store import CubeStore

    _, out = fast
    prepare_dataset(out, get_preset("synthetic").prepare, tmp_path / "cubes", progress=False)
    store = CubeStore.open(tmp_path / "cubes")
    clips = BaselineScorer("velocity").fit(store).score_store(store)
    auc = roc_auc(np.concatenate([c.frame_raw for c in clips]), np.concatenate([c.labels for c in clips]))
    assert auc > 0.9, auc


def test_same_seed_same_bytes_other_seed_other_events(scene, fast, tmp_path):
    _, out = fast
    again = tmp_path / "val"
    inject([scene], again, InjectSettings(seed=0, kinds=("fast",), holdout=2))
    a, b = _digest(out), _digest(again)
    a.pop("inject.json"), b.pop("inject.json")  # holds the output-independent record; compared below
    assert a == b
    assert json.loads((out / "inject.json").read_text()) == json.loads((again / "inject.json").read_text())
    other = tmp_path / "seed1"
    inject([scene], other, InjectSettings(seed=1, kinds=("fast",), holdout=2))
    o = _digest(other)
    assert any(o[k] != a[k] for k in a if k.startswith("testing/frames/"))
    assert json.loads((other / "inject.json").read_text())["events"] != json.loads((out / "inject.json").read_text())["events"]


def test_an_existing_identical_set_is_kept(scene, fast):
    res, out = fast
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    again = inject([scene], out, InjectSettings(seed=0, kinds=("fast",), holdout=2))
    assert again.reused and again.held_out == res.held_out
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == before


def test_every_kind_is_written(scene, tmp_path):
    res = inject([scene], tmp_path / "all", InjectSettings(seed=3, holdout=4 - 1, kinds=("loiter", "rigid", "contraflow")))
    assert [e.kind for e in res.events] == ["loiter", "rigid", "contraflow"]  # kinds[(clip + seed) % 3]
    loiter = next(e for e in res.events if e.kind == "loiter")
    assert loiter.speed_factor == 0.0 and len(loiter.labelled) >= 30  # stands still for seconds
    for e in res.events:
        assert e.labelled, e


def test_brisk_walkers_glide_slower_than_fast_ones_and_only_when_asked(scene, fast, tmp_path):
    assert "brisk" not in InjectSettings().kinds  # the default mix is the one the folds were built with
    res = inject([scene], tmp_path / "brisk", InjectSettings(seed=0, kinds=("brisk",), holdout=2))
    assert [e.kind for e in res.events] == ["brisk", "brisk"]
    assert all(1.3 <= e.speed_factor <= 2.0 and e.labelled for e in res.events)
    # the same clips and seed: the brisk walker crosses fewer pixels a frame than the fast one
    def step(out, clip):  # median distance the mask's centroid moves a frame
        masks = [cv2.imread(str(p), cv2.IMREAD_GRAYSCALE) > 0 for p in sorted((out / "testing" / "pixel_masks" / clip).glob("*.png"))]
        c = np.array([np.argwhere(m).mean(0) for m in masks if m.sum() >= 20])
        return float(np.median(np.linalg.norm(np.diff(c, axis=0), axis=1)))
    _, fast_out = fast
    assert max(step(tmp_path / "brisk", e.clip) for e in res.events) < min(step(fast_out, e.clip) for e in res.events)


# ---------------------------------------------------------------- bad input
def _frames(folder: Path, n: int, size=(48, 64), moving=True, seed=0):
    rng = np.random.default_rng(seed)
    bg = rng.integers(80, 120, size).astype(np.uint8)
    folder.mkdir(parents=True)
    for t in range(n):
        img = bg.copy()
        if moving:
            x = 2 + 2 * t
            img[10:34, x:x + 10] = 20
        cv2.imwrite(str(folder / f"{t:03d}.png"), img)
    return folder


def _nothing_left(out: Path):
    assert not out.exists()
    assert not list(out.parent.glob(f".{out.name}.tmp-*"))


def test_footage_with_no_moving_object_is_refused(tmp_path):
    a, b = _frames(tmp_path / "a", 20, moving=False), _frames(tmp_path / "b", 20, moving=False, seed=1)
    with pytest.raises(DataError, match="no moving object") as e:
        inject([a, b], tmp_path / "out")
    assert str(a) in str(e.value)
    _nothing_left(tmp_path / "out")


def test_clip_shorter_than_a_cube_is_refused(tmp_path):
    a, b = _frames(tmp_path / "a", 20), _frames(tmp_path / "b", 4)
    with pytest.raises(DataError, match="4 frames; a clip needs at least 5") as e:
        inject([a, b], tmp_path / "out")
    assert str(b) in str(e.value)
    _nothing_left(tmp_path / "out")


def test_frames_of_different_sizes_are_refused(tmp_path):
    a, b = _frames(tmp_path / "a", 20), _frames(tmp_path / "b", 20, size=(40, 64))
    with pytest.raises(DataError, match="64x40 but the first clip's are 64x48") as e:
        inject([a, b], tmp_path / "out")
    assert str(b) in str(e.value)
    _nothing_left(tmp_path / "out")
    c = _frames(tmp_path / "c", 20)
    cv2.imwrite(str(c / "007.png"), np.zeros((40, 64), np.uint8))  # one frame of another size inside a clip
    with pytest.raises(DataError, match="frame size 64x40 differs") as e:
        inject([a, c], tmp_path / "out")
    assert "007.png" in str(e.value)
    _nothing_left(tmp_path / "out")


def test_output_folder_with_other_content_is_refused(scene, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert main(["data", "inject", str(scene), "--out", str(out), "--kinds", "fast"]) == 2
    err = capsys.readouterr().err
    assert str(out) in err and "other content" in err
    assert [p.name for p in out.iterdir()] == ["notes.txt"] and not list(tmp_path.glob(".out.tmp-*"))


def test_bad_settings_are_refused(scene, tmp_path):
    with pytest.raises(ConfigError, match="unknown bicycle"):
        inject([scene], tmp_path / "o", InjectSettings(kinds=("bicycle",)))
    with pytest.raises(ConfigError, match="leaves no clip to fit on"):
        inject([scene], tmp_path / "o", InjectSettings(holdout=4))
    with pytest.raises(ConfigError, match="at least 2 normal clips"):
        inject([load_dataset(scene).clips("training")[0].source], tmp_path / "o")
    _nothing_left(tmp_path / "o")


def test_folds_hold_out_each_block_of_clips_in_turn(scene, tmp_path, capsys):
    """--fold 1 holds out the block of clips before the last: folds 0 and 1 together hold out every clip
    once; a fold past the clips is refused, naming the folds that exist."""
    assert main(["data", "inject", str(scene), "--out", str(tmp_path / "f1"), "--kinds", "rigid", "--holdout", "2",
                 "--fold", "1"]) == 0
    idx = load_dataset(tmp_path / "f1")
    assert [c.name for c in idx.clips("training")] == ["03", "04"] and [c.name for c in idx.clips("testing")] == ["01", "02"]
    src = {c.name: c for c in load_dataset(scene).clips("training")}
    for c in idx.clips("training"):  # the fit clips are the later ones, unchanged
        assert [f.read_bytes() for f in c.frame_files] == [f.read_bytes() for f in src[c.name].frame_files]
    assert all(c.labels.sum() > 0 for c in idx.clips("testing"))
    assert json.loads((tmp_path / "f1" / "inject.json").read_text())["settings"]["fold"] == 1
    capsys.readouterr()
    assert main(["data", "inject", str(scene), "--out", str(tmp_path / "f2"), "--holdout", "2", "--fold", "2"]) == 2
    assert "folds 0..1 exist" in capsys.readouterr().err
    _nothing_left(tmp_path / "f2")


def test_video_files_given_one_by_one(scene, tmp_path):
    """Video sources: fit clips are decoded to PNG frames, held-out ones injected; same layout."""
    from amsrc.data.readers import open_clip
    from helpers_video import write_video

    clips = load_dataset(scene).clips("training")
    videos = [write_video(tmp_path / f"cam{k}.avi", np.stack(list(open_clip(c).iter_frames())), codec="png", fps=10)
              for k, c in enumerate(clips[:3])]
    res = inject(videos, tmp_path / "val", InjectSettings(seed=2, kinds=("rigid",), holdout=1))
    assert res.fit == ["cam0", "cam1"] and res.held_out == ["cam2"]
    idx = load_dataset(tmp_path / "val")
    fit0 = idx.clips("training")[0]
    assert fit0.n_frames == 100 and fit0.frame_files[0].suffix == ".png"
    np.testing.assert_array_equal(open_clip(fit0).read(17), open_clip(clips[0]).read(17))  # lossless both ways
    test = idx.clips("testing")[0]
    assert test.n_frames == 100 and test.labels.sum() == len(res.events[0].labelled) > 0
