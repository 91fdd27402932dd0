"""Cube store and ``amsrc prepare``: layout, cache reuse/invalidation, resume, damage, shards, workers."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from amsrc.config import PrepareConfig, get_preset
from amsrc.data.index import Clip, DatasetIndex
from amsrc.data.readers import FolderReader
from amsrc.errors import DataError
from amsrc.prepare import store as store_mod
from amsrc.prepare.cubes import CubeExtractor
from amsrc.prepare.run import prepare_dataset
from amsrc.prepare.store import CubeStore

cv2.setNumThreads(1)

H, W, SQ = 48, 64, 12


class SquareMasks:
    """Pixel masks of a clip: the moving square (module level so it pickles for worker processes)."""

    def __init__(self, positions):
        self.positions = positions

    def __len__(self):
        return len(self.positions)

    def read(self, i):
        m = np.zeros((H, W), bool)
        x, y = self.positions[i]
        m[y : y + SQ, x : x + SQ] = True
        return m


def write_clip(folder: Path, n: int, seed: int, pause=(), size=(H, W)):
    """A frame folder: a textured square moving 2 px/frame to the right, standing still at frames in ``pause``."""
    rng = np.random.default_rng(seed)
    bg = np.full(size, 90, np.uint8)
    tex = rng.integers(0, 256, (SQ, SQ)).astype(np.uint8)
    folder.mkdir(parents=True, exist_ok=True)
    x, y = 4 + seed % 5, 8 + seed % 7
    positions, files = [], []
    for t in range(n):
        if t > 0 and t not in pause:
            x += 2
        img = bg.copy()
        img[y : y + SQ, x : x + SQ] = tex
        f = folder / f"{t:03d}.png"
        cv2.imwrite(str(f), img)
        files.append(f)
        positions.append((x, y))
    return tuple(files), positions


def make_dataset(root: Path) -> DatasetIndex:
    """2 training clips, 2 testing clips (one labelled with masks and a still stretch), 1 short clip."""
    splits: dict[str, list[Clip]] = {"training": [], "testing": []}
    spec = [
        ("training", "01", 14, 1, ()),
        ("training", "02", 12, 2, ()),
        ("training", "03", 3, 3, ()),  # shorter than 5 frames
        ("testing", "01", 16, 4, (8, 9, 10, 11)),  # the square stands still: frames with no objects
        ("testing", "02", 10, 5, ()),
    ]
    for split, name, n, seed, pause in spec:
        files, pos = write_clip(root / split / name, n, seed, pause)
        labels = masks = None
        if split == "testing":
            labels = np.zeros(n, np.uint8)
            labels[n // 2 :] = 1
            masks = SquareMasks(pos) if name == "01" else None
        splits[split].append(
            Clip(name=name, split=split, source=root / split / name, n_frames=n, frame_files=files, labels=labels, masks=masks)
        )
    return DatasetIndex(root=root, layout="frames", splits={k: tuple(v) for k, v in splits.items()})


CFG = PrepareConfig()


def run(index, out, **kw):
    kw.setdefault("progress", False)
    return prepare_dataset(index, kw.pop("cfg", CFG), out, **kw)


def all_arrays(root: Path) -> dict:
    store = CubeStore.open(root)
    out = {}
    for split in store.splits():
        for name in store.clips(split):
            c = store.load(split, name)
            for k in ("appearance", "flow", "boxes", "frames", "offsets", "labels"):
                v = getattr(c, k)
                out[(split, name, k)] = None if v is None else np.array(v)
            out[(split, name, "n_frames")] = c.n_frames
    return out


def assert_same(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        if a[k] is None or isinstance(a[k], int):
            assert a[k] == b[k], k
        else:
            assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
            np.testing.assert_array_equal(a[k], b[k], err_msg=str(k))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    index = make_dataset(root)
    ref = tmp_path_factory.mktemp("ref") / "store"
    report = run(index, ref)
    return index, ref, report, all_arrays(ref)


def copy_store(ref: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "store"
    shutil.copytree(ref, dst)
    return dst


# ---------------------------------------------------------------- layout and content
def test_store_layout_offsets_empty_frames_and_short_clip(data):
    index, ref, report, arrays = data
    store = CubeStore.open(ref)
    assert store.splits() == ["training", "testing"]
    assert store.clips("training") == ["01", "02", "03"] and store.clips("testing") == ["01", "02"]
    assert store.settings == dataclasses.asdict(CFG)
    total = 0
    for split in store.splits():
        for clip in index.clips(split):
            c = store.load(split, clip.name)
            assert c.n_frames == clip.n_frames and c.source == str(clip.source)
            n = c.frames.shape[0]
            total += n
            assert c.offsets.shape == (clip.n_frames + 1,) and c.offsets[0] == 0 and c.offsets[-1] == n
            assert np.all(np.diff(c.offsets) >= 0) and np.all(np.diff(c.frames) >= 0)
            for t in range(clip.n_frames):
                assert np.all(c.frames[c.offsets[t] : c.offsets[t + 1]] == t)
            assert np.all(c.offsets[:5] == 0)  # frames 0..3 hold no cubes
            assert c.appearance.shape == (n, 5, 32, 32, 1) and c.appearance.dtype == np.uint8
            assert c.flow.shape == (n, 4, 32, 32, 2) and c.flow.dtype == np.float16
            assert c.boxes.shape == (n, 4) and c.boxes.dtype == np.int32
            assert isinstance(c.appearance, np.memmap) and isinstance(c.flow, np.memmap)
            if clip.labels is None:
                assert c.labels is None
            else:
                np.testing.assert_array_equal(c.labels, clip.labels)
    assert total == sum(report.cubes_per_split.values()) > 0
    # every moving frame t >= 4 of a long clip has the square boxed
    tr = store.load("training", "01")
    assert np.all(np.diff(tr.offsets)[4:] >= 1)
    # the short clip: all 3 frames recorded, no cubes, one warning line
    short = store.load("training", "03")
    assert short.n_frames == 3 and short.offsets.tolist() == [0, 0, 0, 0] and short.appearance.shape[0] == 0
    text = report.format()
    assert report.short_clips == ["training/03"]
    assert sum("shorter than 5 frames" in line for line in text.splitlines()) == 1
    # still stretch in testing/01: frames whose square did not move since the previous frame are empty
    te = store.load("testing", "01")
    counts = np.diff(te.offsets)
    assert counts[9] == 0 and counts[10] == 0 and counts[11] == 0  # still at 8..11: no motion at 9..11
    assert counts[13] >= 1
    # report numbers
    assert report.cubes_per_split == {s: sum(store.load(s, n).frames.shape[0] for n in store.clips(s)) for s in store.splits()}
    assert report.frames_per_split == {"training": 29, "testing": 26}
    assert set(report.built) == {"training/01", "training/02", "training/03", "testing/01", "testing/02"}
    assert report.reused == [] and report.complete
    # recall over testing/01 (the only clip with masks): one object in each of frames 4..15, found where it moved
    r = report.recall
    assert r is not None and r["anomalous_frames"] == 12 and r["objects"] == 12 and r["objects_first_frames"] == 4
    moving = [t for t in range(4, 16) if counts[t] >= 1]
    assert r["found"] == r["frames_all_found"] == len(moving)
    assert report.box_area["max"] <= 0.25 * H * W
    json.dumps(report.to_dict())
    # object labels: only the clip with masks has them; a cube is anomalous exactly when its box
    # holds >= 20 pixels of the square's mask (its frame labels say nothing about this)
    assert store.load("testing", "02").object_labels is None and store.load("training", "01").object_labels is None
    masks = index.clips("testing")[0].masks
    want = [int(masks.read(int(t))[y0:y1, x0:x1].sum() >= 20) for t, (x0, y0, x1, y1) in zip(te.frames, te.boxes)]
    assert te.object_labels.dtype == np.uint8 and te.object_labels.tolist() == want and sum(want) == len(moving)


def test_box_labels_count_mask_pixels_inside_each_box():
    from amsrc.prepare.recall import box_labels

    mask = np.zeros((20, 30), bool)
    mask[5:10, 5:10] = True  # 25 pixels
    boxes = np.array([[0, 0, 30, 20], [5, 5, 9, 10], [5, 5, 10, 9], [20, 0, 30, 20], [-5, -5, 40, 40]], np.int32)
    # whole frame: 25; 4x5 = 20 (at the limit); 5x4 = 20; none; clipped to the frame: 25
    assert box_labels(mask, boxes).tolist() == [1, 1, 1, 0, 1]
    assert box_labels(mask, boxes, min_px=21).tolist() == [1, 0, 0, 0, 1]
    assert box_labels(np.zeros((20, 30), bool), boxes).tolist() == [0] * 5


def test_train_path_equals_live_path(data):
    """Cubes loaded from the store equal what CubeExtractor.push yields on the same frames."""
    index, ref, _, _ = data
    store = CubeStore.open(ref)
    for split in ("training", "testing"):
        clip = index.clips(split)[0]
        c = store.load(split, clip.name)
        ex = CubeExtractor(CFG)
        for t, frame in enumerate(FolderReader(clip.frame_files).iter_frames()):
            # the live path gets frames from elsewhere: decode independently with cv2
            live = cv2.cvtColor(cv2.imread(str(clip.frame_files[t])), cv2.COLOR_BGR2RGB)
            np.testing.assert_array_equal(live, frame)
            obj = ex.push(live)
            a, b = c.offsets[t], c.offsets[t + 1]
            np.testing.assert_array_equal(obj.boxes, c.boxes[a:b])
            np.testing.assert_array_equal(obj.appearance, c.appearance[a:b])
            np.testing.assert_array_equal(obj.flow, c.flow[a:b])


# ---------------------------------------------------------------- cache
def test_second_run_reuses_everything(data, tmp_path):
    index, ref, _, arrays = data
    out = copy_store(ref, tmp_path)
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*.npy")}
    report = run(index, out)
    assert report.built == [] and len(report.reused) == 5 and report.frames_built == 0 and report.complete
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.npy")} == mtimes
    assert_same(all_arrays(out), arrays)
    assert report.recall == data[2].recall and report.cubes_per_split == data[2].cubes_per_split


def test_changed_setting_rebuilds_everything(data, tmp_path):
    index, ref, _, _ = data
    out = copy_store(ref, tmp_path)
    cfg = PrepareConfig(cube_size=16)
    report = run(index, out, cfg=cfg)
    assert len(report.built) == 5 and report.reused == []
    assert set(report.rebuild_reasons.values()) == {"settings changed"}
    store = CubeStore.open(out)
    assert store.settings["cube_size"] == 16 and store.key != CubeStore.open(ref).key
    assert store.load("training", "01").appearance.shape[2:] == (16, 16, 1)
    # thread counts do not change the cubes: no rebuild
    cfg2 = PrepareConfig(cube_size=16)
    cfg2.flow.threads = 0
    assert run(index, out, cfg=cfg2).built == []
    # the box association and the flow's refinement and scale are settings of the cubes too
    for section, key, value in (("boxes", "persist", 2), ("flow", "dis_refine", 3), ("flow", "scale", 0.5)):
        cfg3 = PrepareConfig(cube_size=16)
        setattr(getattr(cfg3, section), key, value)
        report = run(index, out, cfg=cfg3)
        assert len(report.built) == 5 and set(report.rebuild_reasons.values()) == {"settings changed"}, key
        assert CubeStore.open(out).settings[section][key] == value


def test_changed_source_file_rebuilds_that_clip(data, tmp_path):
    index, ref, _, arrays = data
    root = tmp_path / "data"
    shutil.copytree(index.root, root)
    index2 = make_dataset(root)  # same content, new paths: a different source
    out = tmp_path / "store"
    run(index2, out)
    assert_same(all_arrays(out), {k: v for k, v in arrays.items()})  # same pixels -> same cubes
    f = index2.clips("testing")[1].frame_files[6]
    img = cv2.imread(str(f), cv2.IMREAD_UNCHANGED)
    img[0:6, 0:6] = 255 - img[0:6, 0:6]
    cv2.imwrite(str(f), img)
    os.utime(f, ns=(f.stat().st_atime_ns, f.stat().st_mtime_ns + 10_000_000))
    report = run(index2, out)
    assert report.built == ["testing/02"] and report.rebuild_reasons == {"testing/02": "source changed"}
    assert len(report.reused) == 4


def test_source_key_ignores_mtime_but_sees_content(data, tmp_path):
    """The same footage unpacked again (new mtimes) keeps its key, so its cubes are reused; a byte changed
    in the middle of a file larger than the sampled parts, its size unchanged, changes the key."""
    index, _, _, _ = data
    root = tmp_path / "data"
    shutil.copytree(index.root, root)
    index2 = make_dataset(root)
    out = tmp_path / "store"
    run(index2, out)
    for f in root.rglob("*"):
        if f.is_file():
            os.utime(f, ns=(f.stat().st_atime_ns, f.stat().st_mtime_ns + 5_000_000_000))
    report = run(make_dataset(root), out)
    assert report.built == [] and len(report.reused) == 5
    clip = make_dataset(root).clips("testing")[0]
    big = tmp_path / "big.bin"
    big.write_bytes(bytes(4 * store_mod.SAMPLE))
    before = store_mod.source_hash(dataclasses.replace(clip, frame_files=(big,)))
    raw = bytearray(big.read_bytes())
    raw[store_mod.SAMPLE + 10] = 1  # outside the start, middle and end samples
    big.write_bytes(bytes(raw))
    assert store_mod.source_hash(dataclasses.replace(clip, frame_files=(big,))) == before  # the price of sampling
    raw[2 * store_mod.SAMPLE] = 1  # inside the middle sample
    big.write_bytes(bytes(raw))
    assert store_mod.source_hash(dataclasses.replace(clip, frame_files=(big,))) != before


# ---------------------------------------------------------------- interruption and damage
def test_resume_after_interrupted_run(data, tmp_path, monkeypatch):
    index, _, _, arrays = data
    out = tmp_path / "store"
    real_add = store_mod.ClipWriter.add
    calls = {"n": 0}

    def add_then_die(self, obj):
        calls["n"] += 1
        if calls["n"] == 14 + 5:  # clip 1 (14 frames) done, 5 frames into clip 2
            raise KeyboardInterrupt
        real_add(self, obj)

    monkeypatch.setattr(store_mod.ClipWriter, "add", add_then_die)
    with pytest.raises(KeyboardInterrupt):
        run(index, out)
    monkeypatch.setattr(store_mod.ClipWriter, "add", real_add)
    assert store_mod.read_done(out, "training", "01") is not None
    assert not (out / "training" / "02").exists()
    assert not list((out / "training").glob(".02.tmp-*"))  # the half-written shard was removed
    with pytest.raises(DataError, match="incomplete"):
        CubeStore.open(out)
    # a hard kill leaves its temporary folder: the next run removes it
    (out / "training" / ".02.tmp-999-deadbeef").mkdir()
    report = run(index, out)
    assert report.reused == ["training/01"] and len(report.built) == 4
    assert not list((out / "training").glob(".02.tmp-*"))
    assert_same(all_arrays(out), arrays)
    # a clip whose done marker is gone is rebuilt
    (out / "testing" / "02" / "done.json").unlink()
    report = run(index, out)
    assert report.built == ["testing/02"] and report.rebuild_reasons == {}
    assert_same(all_arrays(out), arrays)


def test_truncated_shard_detected_and_rebuilt(data, tmp_path):
    index, ref, _, arrays = data
    out = copy_store(ref, tmp_path)
    f = out / "training" / "01" / "flow.npy"
    with open(f, "r+b") as fh:
        fh.truncate(f.stat().st_size - 1000)
    with pytest.raises(DataError, match=r"flow\.npy.*truncated"):
        CubeStore.open(out)
    report = run(index, out)
    assert report.built == ["training/01"] and "truncated" in report.rebuild_reasons["training/01"]
    assert_same(all_arrays(out), arrays)


def test_corrupted_shard_detected_and_rebuilt(data, tmp_path):
    index, ref, _, arrays = data
    out = copy_store(ref, tmp_path)
    f = out / "testing" / "01" / "appearance.npy"
    raw = bytearray(f.read_bytes())
    raw[-3000] ^= 0xFF  # flip bits in the data: same size
    f.write_bytes(bytes(raw))
    store = CubeStore.open(out)  # sizes match: open (stat only) passes ...
    with pytest.raises(DataError, match=r"appearance\.npy.*corrupted"):
        store.load("testing", "01")  # ... but loading checks the CRC-32
    with pytest.raises(DataError, match="corrupted"):
        store.verify()
    # a damaged header is caught too
    g = out / "training" / "02" / "boxes.npy"
    raw = bytearray(g.read_bytes())
    raw[20:30] = b"XXXXXXXXXX"
    g.write_bytes(bytes(raw))
    with pytest.raises(DataError):
        store.load("training", "02")
    report = run(index, out)
    assert sorted(report.built) == ["testing/01", "training/02"]
    assert "corrupted" in report.rebuild_reasons["testing/01"]
    assert_same(all_arrays(out), arrays)


def test_missing_store_and_frames_of_different_sizes(data, tmp_path):
    with pytest.raises(DataError, match="manifest.json"):
        CubeStore.open(tmp_path / "nothing")
    root = tmp_path / "bad"
    files, _ = write_clip(root / "training" / "01", 8, 0)
    cv2.imwrite(str(files[5]), np.zeros((40, 64), np.uint8))
    clip = Clip(name="01", split="training", source=root / "training" / "01", n_frames=8, frame_files=files)
    index = DatasetIndex(root=root, layout="frames", splits={"training": (clip,)})
    with pytest.raises(DataError, match=r"005\.png.*64x40"):
        run(index, tmp_path / "store")
    assert not (tmp_path / "store" / "training" / "01").exists()
    assert not list((tmp_path / "store" / "training").glob(".01.*"))


# ---------------------------------------------------------------- shards and workers
def test_shards_then_full_run_builds_nothing(data, tmp_path):
    index, _, _, arrays = data
    out = tmp_path / "store"
    r1 = run(index, out, shard="1/2")
    assert r1.built == ["training/01", "training/03", "testing/02"] and not r1.complete
    with pytest.raises(DataError, match="incomplete"):
        CubeStore.open(out)
    r2 = run(index, out, shard=(2, 2))
    assert r2.built == ["training/02", "testing/01"] and r2.complete
    r3 = run(index, out)
    assert r3.built == [] and len(r3.reused) == 5
    assert_same(all_arrays(out), arrays)
    with pytest.raises(Exception, match="k/N"):
        run(index, out, shard="3/2")


@pytest.mark.slow
def test_two_workers_give_the_same_store(data, tmp_path):
    index, ref, ref_report, arrays = data
    out = tmp_path / "store"
    report = run(index, out, workers=2)
    assert sorted(report.built) == sorted(ref_report.built)
    assert_same(all_arrays(out), arrays)
    assert report.recall == ref_report.recall
    assert CubeStore.open(out).key == CubeStore.open(ref).key


def test_worker_error_is_reported_with_the_file(tmp_path):
    root = tmp_path / "bad"
    clips = []
    for name in ("01", "02"):
        files, _ = write_clip(root / "training" / name, 8, 1)
        clips.append(Clip(name=name, split="training", source=root / "training" / name, n_frames=8, frame_files=files))
    clips[1].frame_files[3].write_bytes(b"not an image")
    index = DatasetIndex(root=root, layout="frames", splits={"training": tuple(clips)})
    with pytest.raises(DataError, match=r"003\.png"):
        run(index, tmp_path / "store", workers=2)


def test_cli_prepare(tmp_path, capsys):
    from amsrc.cli import main

    root = tmp_path / "ds"
    for split, name, n in (("training", "01", 10), ("testing", "01", 9)):
        write_clip(root / split / "frames" / name, n, 2)
    rc = main(["prepare", str(root), "--preset", "synthetic", "--out", str(tmp_path / "store"), "--no-progress"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "2 built, 0 reused" in out and "boxes per frame" in out
    store = CubeStore.open(tmp_path / "store")
    assert store.preset == "synthetic" and store.settings == dataclasses.asdict(get_preset("synthetic").prepare)
    rc = main(["prepare", str(root), "--preset", "synthetic", "--out", str(tmp_path / "store"), "--no-progress"])
    assert rc == 0 and "0 built, 2 reused" in capsys.readouterr().out
    rc = main(["prepare", str(root), "--out", str(tmp_path / "s2"), "--shard", "x"])
    assert rc == 2 and "k/N" in capsys.readouterr().err


# ---------------------------------------------------------------- streamed .npy files
def _stream(path: Path, dtype: str, item_shape: tuple, chunks) -> dict:
    s = store_mod._NpyStream(path, dtype, item_shape)
    for c in chunks:
        s.append(c)
    return s.close()


@pytest.mark.parametrize(
    "dtype, item_shape",
    [
        ("<c8", (2, 3, 1, 5)),
        (">i2", (1,) * 14 + (3,)),  # a long shape: the header is over 128 bytes
        ("|b1", ()),
        ("<f2", (4, 7, 7, 2)),
    ],
)
@pytest.mark.parametrize("n_chunks", [0, 1, 3])
def test_npy_stream_round_trips_with_a_numpy_header(tmp_path, dtype, item_shape, n_chunks):
    rng = np.random.default_rng(len(item_shape) + n_chunks)
    chunks = [(rng.standard_normal((k, *item_shape)) * 100).astype(dtype) for k in (3, 0, 5)[:n_chunks]]
    want = (np.concatenate(chunks) if chunks else np.zeros((0, *item_shape))).astype(dtype)
    path = tmp_path / "x.npy"
    info = _stream(path, dtype, item_shape, chunks)
    assert info["shape"] == list(want.shape) and info["dtype"] == np.dtype(dtype).str
    assert info["bytes"] == path.stat().st_size
    # numpy reads the header ...
    with open(path, "rb") as f:
        assert np.lib.format.read_magic(f) == (1, 0)
        shape, fortran, dt = np.lib.format.read_array_header_1_0(f)
        offset = f.tell()
    assert shape == want.shape and not fortran and dt == np.dtype(dtype)
    assert offset % 64 == 0 and info["bytes"] == offset + want.nbytes
    assert store_mod._npy_header(path) == (want.shape, np.dtype(dtype).str, offset)
    # ... and the whole array, memory-mapped
    arr = np.load(path, mmap_mode="r", allow_pickle=False)
    assert arr.dtype == want.dtype and arr.shape == want.shape
    np.testing.assert_array_equal(arr, want)
    # the CRC-32 covers the data after the header
    assert info["crc32"] == store_mod._crc_data(path, offset)
    assert store_mod.check_files(tmp_path, {"x.npy": info}, full=True) is None


def test_npy_stream_rewrites_the_file_when_the_header_length_changes(tmp_path, monkeypatch):
    real = store_mod._NpyStream._header
    # reserve a header of another length than the final one (as a numpy without growth padding would)
    monkeypatch.setattr(store_mod._NpyStream, "_header", lambda self, n: b"\0" * 16 if n == 0 else real(self, n))
    want = np.arange(24, dtype="<i8").reshape(4, 2, 3)
    path = tmp_path / "x.npy"
    info = _stream(path, "<i8", (2, 3), [want[:1], want[1:]])
    np.testing.assert_array_equal(np.load(path, mmap_mode="r", allow_pickle=False), want)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.npy"]
    assert store_mod.check_files(tmp_path, {"x.npy": info}, full=True) is None


def test_discarded_npy_stream_leaves_no_file(tmp_path):
    s = store_mod._NpyStream(tmp_path / "x.npy", "<f2", (2,))
    s.append(np.ones((3, 2), np.float16))
    s.discard()
    s.discard()
    assert list(tmp_path.iterdir()) == []
    # a closed stream is kept by discard
    s = store_mod._NpyStream(tmp_path / "y.npy", "<f2", (2,))
    s.close()
    s.discard()
    assert np.load(tmp_path / "y.npy").shape == (0, 2)


def test_files_with_the_old_fixed_128_byte_header_stay_readable(tmp_path):
    """Stores written before the header came from numpy: a hand-padded 128-byte npy 1.0 header."""
    import struct
    import zlib

    want = np.arange(30, dtype="<i4").reshape(10, 3)
    d = f"{{'descr': {want.dtype.str!r}, 'fortran_order': False, 'shape': {want.shape!r}, }}"
    header = b"\x93NUMPY\x01\x00" + struct.pack("<H", 118) + (d + " " * (117 - len(d)) + "\n").encode("latin1")
    assert len(header) == 128
    path = tmp_path / "old.npy"
    path.write_bytes(header + want.tobytes())
    info = {"shape": [10, 3], "dtype": "<i4", "bytes": 128 + want.nbytes, "crc32": zlib.crc32(want.tobytes())}
    assert store_mod._npy_header(path) == ((10, 3), "<i4", 128)
    assert store_mod.check_files(tmp_path, {"old.npy": info}, full=True) is None
    np.testing.assert_array_equal(np.load(path, mmap_mode="r", allow_pickle=False), want)


# ---------------------------------------------------------------- box method "bg": the training background
def _bg_cfg(**kw) -> PrepareConfig:
    cfg = PrepareConfig()
    cfg.boxes.method, cfg.boxes.bg_threshold, cfg.boxes.min_area = "bg", 35.0, 20
    cfg.boxes.close_w, cfg.boxes.close_h = 1, 5
    for k, v in kw.items():
        setattr(cfg.boxes, k, v)
    return cfg


def test_background_is_learned_from_training_and_keeps_a_stopped_object(data, tmp_path):
    """The median of the training frames is the empty scene (the square moves, so no pixel holds it
    most of the time); with it, the test square that stands still in frames 8-11 keeps its box, where
    the frame difference ("diff") loses it."""
    index, ref, _, _ = data
    out = tmp_path / "bg"
    run(index, out, cfg=_bg_cfg())
    store = CubeStore.open(out)
    assert store.background.shape == (H, W) and store.settings["background"]
    assert int(np.abs(store.background.astype(int) - 90).max()) <= 1  # the empty grey ground
    assert cv2.imread(str(out / "background.png"), cv2.IMREAD_UNCHANGED).tolist() == store.background.tolist()
    bg = store.load("testing", "01")
    diff = CubeStore.open(ref).load("testing", "01")
    per_frame = np.diff(bg.offsets)
    assert per_frame[8:12].tolist() == [1, 1, 1, 1]  # still square: found by the background
    assert np.diff(diff.offsets)[8:12].sum() == 0  # and not by the frame difference
    # the box covers the whole square (12 px + margin 4 on each side), not its moving edges
    x0, y0, x1, y1 = bg.boxes[bg.offsets[9]]
    assert x1 - x0 == SQ + 8 and y1 - y0 == SQ + 8


def test_background_setting_or_image_change_rebuilds(data, tmp_path):
    index, _, _, _ = data
    out = tmp_path / "bg"
    run(index, out, cfg=_bg_cfg())
    assert run(index, out, cfg=_bg_cfg()).built == []
    report = run(index, out, cfg=_bg_cfg(bg_threshold=20.0))
    assert len(report.built) == 5 and set(report.rebuild_reasons.values()) == {"settings changed"}
    # another background (a fitted model's) is another setting too
    other = np.full((H, W), 60, np.uint8)
    report = run(index, out, cfg=_bg_cfg(bg_threshold=20.0), background=other)
    assert len(report.built) == 5 and CubeStore.open(out).background.tolist() == other.tolist()
    # a store whose background.png does not match its manifest is refused
    cv2.imwrite(str(out / "background.png"), np.zeros((H, W), np.uint8))
    with pytest.raises(DataError, match="background"):
        CubeStore.open(out)


def test_background_needs_training_frames_of_one_size(data, tmp_path):
    from amsrc.errors import ConfigError
    from amsrc.prepare.boxes import make_box_detector

    index, _, _, _ = data
    test_only = DatasetIndex(index.root, index.layout, {"testing": index.clips("testing")})
    with pytest.raises(DataError, match="learns the background from the training split"):
        run(test_only, tmp_path / "a", cfg=_bg_cfg())
    with pytest.raises(ConfigError, match="needs the background"):
        make_box_detector(_bg_cfg().boxes)
    det = make_box_detector(_bg_cfg().boxes, np.zeros((H + 2, W), np.uint8))
    frame = np.zeros((H, W), np.uint8)
    with pytest.raises(DataError, match=f"background .* is {W}x{H + 2}, this frame is {W}x{H}"):
        det(frame, frame)
    files, _ = write_clip(tmp_path / "big", 6, seed=1, size=(H + 8, W))
    big = Clip(name="big", split="training", source=tmp_path / "big", n_frames=6, frame_files=files)
    mixed = DatasetIndex(index.root, index.layout, {"training": (*index.clips("training"), big)})
    with pytest.raises(DataError, match="one background needs one frame size"):
        run(mixed, tmp_path / "b", cfg=_bg_cfg())


def test_prepare_scale_at_one_keeps_the_store_key_of_before():
    """A store prepared before ``PrepareConfig.scale`` existed is still reused at scale 1.0; 0.5 rebuilds."""
    from amsrc.prepare.store import settings_hash

    now = dataclasses.asdict(PrepareConfig())
    before = {k: v for k, v in now.items() if k != "scale"}
    assert settings_hash(now) == settings_hash(before)
    assert settings_hash({**now, "scale": 0.5}) != settings_hash(before)


def test_a_store_written_before_prepare_scale_is_read_at_scale_one(tmp_path):
    """Its manifest has no "scale": CubeStore.settings reads 1.0, so a model of today's preset accepts it."""
    from amsrc.detector import _check_store_matches

    folder = tmp_path / "f"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        cv2.imwrite(str(folder / f"{i:03d}.png"), rng.integers(0, 255, (32, 48, 3), dtype=np.uint8))
    idx = DatasetIndex(root=folder, layout="folder",
                       splits={"testing": (Clip("c", "testing", folder, 6, tuple(sorted(folder.glob("*.png")))),)})
    preset = get_preset("default")
    prepare_dataset(idx, preset.prepare, tmp_path / "s", progress=False)
    man = json.loads((tmp_path / "s" / "manifest.json").read_text())
    del man["settings"]["scale"]  # as written before the setting existed (same hash: scale 1.0 is not hashed)
    (tmp_path / "s" / "manifest.json").write_text(json.dumps(man))
    st = CubeStore.open(tmp_path / "s")
    assert st.settings["scale"] == 1.0
    _check_store_matches(st, preset)
    with pytest.raises(Exception, match="scale"):
        _check_store_matches(st, dataclasses.replace(preset, prepare=dataclasses.replace(preset.prepare, scale=0.5)))
