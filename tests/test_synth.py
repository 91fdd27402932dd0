"""Synthetic scenes: exact counts, ground truth that agrees with itself and with the layout
reader, masks exactly on labelled frames, several anomaly kinds, determinism, atomic writes."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import scipy.io as sio

from amsrc.cli import main
from amsrc.data.readers import open_clip
from amsrc.data.synth import KINDS, write_scene
from amsrc.errors import ConfigError, DataError

# a small scene for the tests that write several times
SMALL = dict(height=96, width=128, n_train=1, n_test=2, train_frames=12, test_frames=64)


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "scene"
    return out, write_scene(out, seed=0)


def test_counts_files_and_mat(scene):
    out, index = scene
    assert index.layout == "frames" and index.root == out
    s = index.summary()
    assert (s["training"]["clips"], s["training"]["frames"]) == (4, 480)
    assert (s["testing"]["clips"], s["testing"]["frames"]) == (4, 480)
    for split in ("training", "testing"):
        for c in index.clips(split):
            files = sorted(c.source.iterdir())
            assert [f.name for f in files] == [f"{i:03d}.png" for i in range(c.n_frames)] == [
                f.name for f in c.frame_files]
    gt = sio.loadmat(out / "synthetic.mat")["gt"]
    assert gt.shape == (1, 4)
    total = 0
    for k, c in enumerate(index.clips("testing")):
        iv = np.asarray(gt[0, k])
        assert iv.shape[0] == 2 and iv.shape[1] >= 1
        lab = np.zeros(c.n_frames, np.uint8)
        for a, b in iv.T:
            assert 1 <= a <= b <= c.n_frames
            lab[a - 1: b] = 1
        np.testing.assert_array_equal(lab, c.labels)
        assert 0 < c.n_anomalous < c.n_frames  # every test clip has anomalous and normal frames
        total += c.n_anomalous
    assert s["testing"]["anomalous"] == total
    assert 0.3 * 480 <= total <= 0.75 * 480


def test_frames_grey_and_masks_exactly_on_labelled_frames(scene):
    out, index = scene
    min_px = json.loads((out / "scene.json").read_text())["stamp"]["settings"]["min_visible_px"]
    for c in index.clips("testing"):
        reader = open_clip(c)
        assert len(c.masks) == c.n_frames
        for i in range(c.n_frames):
            raw = np.fromfile(c.masks.files[i], np.uint8)
            import cv2

            m = cv2.imdecode(raw, cv2.IMREAD_UNCHANGED)
            assert m.dtype == np.uint8 and m.ndim == 2 and set(np.unique(m)) <= {0, 255}
            n_px = int(np.count_nonzero(m))
            assert (n_px > 0) == bool(c.labels[i]), (c.name, i)
            assert n_px == 0 or n_px >= min_px
            if i % 40 == 0:
                frame = reader.read(i)
                assert frame.shape == (160, 240, 3) and m.shape == frame.shape[:2]
                assert np.array_equal(frame[..., 0], frame[..., 2])  # grey


def test_anomaly_kinds_and_normal_walkers(scene):
    out, index = scene
    meta = json.loads((out / "scene.json").read_text())
    tracks = json.loads((out / "tracks.json").read_text())
    frames_by_kind: dict[str, int] = {}
    for clip in meta["testing"]:
        for ev in clip["events"]:
            assert ev["kind"] in KINDS
            frames_by_kind[ev["kind"]] = frames_by_kind.get(ev["kind"], 0) + len(ev["anomalous_frames"])
    assert set(frames_by_kind) == set(KINDS) and min(frames_by_kind.values()) > 0
    # the stopped walker (invisible to motion boxes) is a minority of the anomalous frames
    assert frames_by_kind["loiterer"] < 0.2 * sum(frames_by_kind.values())
    # the union of the objects' anomalous frames is the labels
    for clip, c in zip(meta["testing"], index.clips("testing")):
        lab = np.zeros(c.n_frames, np.uint8)
        for ev in clip["events"]:
            lab[ev["anomalous_frames"]] = 1
        np.testing.assert_array_equal(lab, c.labels)
    # several normal walkers in every frame; training has nothing but walkers
    for split in ("training", "testing"):
        for name, objs in tracks[split].items():
            n = max(max(o["frames"]) for o in objs) + 1
            walkers = np.zeros(n, int)
            for o in objs:
                if split == "training":
                    assert o["kind"] == "walker" and not any(o["anomalous"])
                if o["kind"] == "walker":
                    for f, v in zip(o["frames"], o["visible_px"]):
                        walkers[f] += v >= 20
            assert walkers.min() >= 3, (split, name)


def test_speed_cue_from_ground_truth(scene):
    """Fast kinds are fast relative to their apparent size; walkers and crossers walk."""
    out, _ = scene
    tracks = json.loads((out / "tracks.json").read_text())["testing"]
    rel: dict[str, list[float]] = {}
    for objs in tracks.values():
        for o in objs:
            r = [s / (b[3] - b[1]) for s, b, v in zip(o["speed_px"], o["boxes"], o["visible_px"])
                 if s is not None and v >= 150 and b[3] < 160 and b[1] > 0]  # whole body in view
            if len(r) >= 3:
                rel.setdefault(o["kind"], []).append(float(np.median(r)))
    walk = max(rel["walker"])
    assert walk < 0.12
    assert min(rel["cyclist"] + rel["skater"]) > 1.8 * walk
    assert max(rel["crosser"]) < 0.12


def test_load_dataset_agrees(scene):
    out, index = scene
    from amsrc.data.layouts import load_dataset

    other = load_dataset(out)
    assert other.layout == "frames"
    for split in ("training", "testing"):
        mine, theirs = index.clips(split), other.clips(split)
        assert [c.name for c in mine] == [c.name for c in theirs]
        assert [c.n_frames for c in mine] == [c.n_frames for c in theirs]
        assert [c.frame_files for c in mine] == [c.frame_files for c in theirs]
        assert {c.fps for c in theirs} == {10.0}  # the scene's rate, from its dataset.json
    for a, b in zip(index.clips("testing"), other.clips("testing")):
        np.testing.assert_array_equal(a.labels, b.labels)
        assert b.masks is not None and len(b.masks) == a.n_frames
        k = int(np.flatnonzero(a.labels)[0])
        np.testing.assert_array_equal(a.masks.read(k), b.masks.read(k))
    assert other.summary()["testing"] == index.summary()["testing"]


def test_same_seed_same_bytes_and_reuse(tmp_path):
    a = write_scene(tmp_path / "a", seed=3, **SMALL)
    write_scene(tmp_path / "b", seed=3, **SMALL)
    da, db = _digest(tmp_path / "a"), _digest(tmp_path / "b")
    assert da == db and len(da) == 12 + 2 * 2 * 64 + 5  # frames, test masks, mat/json/json/json/readme
    write_scene(tmp_path / "c", seed=4, **SMALL)
    dc = _digest(tmp_path / "c")
    assert dc["testing/frames/01/010.png"] != da["testing/frames/01/010.png"]
    # the same scene again: accepted, nothing rewritten
    mtimes = {p: p.stat().st_mtime_ns for p in (tmp_path / "a").rglob("*")}
    again = write_scene(tmp_path / "a", seed=3, **SMALL)
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "a").rglob("*")} == mtimes
    for x, y in zip(a.clips("testing"), again.clips("testing")):
        np.testing.assert_array_equal(x.labels, y.labels)
    # another seed or other settings into a non-empty folder: refused
    with pytest.raises(DataError, match="not empty"):
        write_scene(tmp_path / "a", seed=4, **SMALL)
    with pytest.raises(DataError, match="not empty"):
        write_scene(tmp_path / "a", seed=3, **{**SMALL, "test_frames": 65})
    # no temporary folders left beside the outputs
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "c"]


def test_refuses_foreign_folder_and_writes_atomically(tmp_path, monkeypatch):
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="busy"):
        write_scene(busy, **SMALL)
    assert [p.name for p in busy.iterdir()] == ["notes.txt"]
    # an empty folder is fine
    (tmp_path / "empty").mkdir()
    assert write_scene(tmp_path / "empty", **SMALL).summary()["training"]["frames"] == 12
    # a failure half-way leaves nothing behind
    import amsrc.data.synth as synth

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(synth, "_write_mat", boom)
    with pytest.raises(OSError, match="disk full"):
        write_scene(tmp_path / "half", **SMALL)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["busy", "empty"]
    with pytest.raises(ConfigError, match="64x64"):
        write_scene(tmp_path / "tiny", width=32)


def test_cli_synth(scene, capsys):
    out, index = scene
    assert main(["data", "synth", str(out), "--seed", "0"]) == 0  # same scene: found, not rewritten
    text = capsys.readouterr().out
    assert "found the same synthetic scene" in text
    assert f"480 frames  {index.summary()['testing']['anomalous']} anomalous" in text
    assert main(["data", "synth", str(out), "--seed", "1"]) == 2
    assert "not empty" in capsys.readouterr().err
