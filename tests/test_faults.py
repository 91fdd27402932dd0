"""The fault catalogue (issue 14): every bad input and unlucky machine a probe tried, one row each.

Each CLI case runs ``amsrc.cli.main`` in-process and asserts the exit code, that the message names
the file (or option) at fault, that every input is byte-for-byte unchanged and that nothing
half-written is left (no temporary name anywhere under the test folder). Signals run in a
subprocess. A tiny untrained model (tests/helpers_model.py) and a 2-clip synthetic scene keep the
whole file to seconds.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from amsrc.cli import main
from amsrc.data.synth import write_scene
from amsrc.errors import ConfigError, DataError, WorkerError
from amsrc.training.checkpoint import FootageInfo, Threshold
from helpers_model import ctrl_c_at_frame, tiny_detector
from helpers_video import make_frames, write_video

W, H = 64, 64


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A scene (frames layout), its cube store (preset synthetic), a tiny model, a video, a frame folder."""
    torch.set_num_threads(1)
    d = tmp_path_factory.mktemp("faults")
    root = d / "scene"
    write_scene(root, seed=0, height=H, width=W, n_train=1, n_test=1, train_frames=12, test_frames=60,
                min_walkers=1, max_walkers=2)
    assert main(["prepare", str(root), "--preset", "synthetic", "--out", str(d / "store"), "--no-progress"]) == 0
    det = tiny_detector()
    det.footage_ = FootageInfo(frame_size=(H, W), fps=25.0)
    det.threshold_ = Threshold(1.0, 0.5, "test")
    model = det.save(d / "model.pt")
    video = write_video(d / "v.avi", make_frames(20, h=H, w=W), codec="mjpeg")
    folder = root / "testing" / "frames" / sorted(os.listdir(root / "testing" / "frames"))[0]
    return {"dir": d, "root": root, "store": d / "store", "model": model, "video": video, "folder": folder}


def _digest(paths) -> dict:
    """sha256 of every file under ``paths`` (the inputs that must not change)."""
    out = {}
    for p in paths:
        p = Path(p)
        for f in sorted(p.rglob("*")) if p.is_dir() else [p]:
            if f.is_file():
                out[str(f)] = hashlib.sha256(f.read_bytes()).hexdigest()
    return out


def _leftovers(*dirs) -> list[str]:
    """Temporary names (ours: hidden ``.NAME.*.tmp`` files, ``.tmp-`` shards, write checks) under ``dirs``."""
    bad = []
    for d in dirs:
        for f in Path(d).rglob("*"):
            if f.name.startswith(".") and (".tmp" in f.name or "write-check" in f.name or ".old-" in f.name):
                bad.append(str(f))
    return bad


def _run(argv: list[str], capsys) -> tuple[int, str]:
    try:
        rc = main([str(a) for a in argv])
    except SystemExit as exc:  # argparse refuses a bad value itself (exit 2)
        rc = exc.code
    return rc, capsys.readouterr().err


# ------------------------------------------------------------------ the table of CLI cases
# (case, argv with {placeholders}, files made before, exit code, what the message must say)
W_ = "{work}"
CASES = [
    # outputs never touch inputs
    ("score --csv onto the input video", ["score", "{model}", "{video}", "--csv", "{video}"], 2, ["{video}", "is the source"]),
    ("score --csv onto the model", ["score", "{model}", "{video}", "--csv", "{model}"], 2, ["{model}", "is the model"]),
    ("score --overlay onto the model", ["score", "{model}", "{video}", "--overlay", "{model}"], 2, ["is the model"]),
    ("score --csv inside the source folder", ["score", "{model}", "{folder}", "--csv", "{folder}/s.csv"], 2,
     ["lies inside the source folder"]),
    ("score --csv and --events the same file", ["score", "{model}", "{video}", "--csv", W_ + "/a", "--events", W_ + "/a"],
     2, ["--csv and --events are the same file"]),
    ("score --csv that is a folder", ["score", "{model}", "{video}", "--csv", W_], 2, [W_, "is a folder"]),
    ("prepare --out the dataset root", ["prepare", "{root}", "--out", "{root}"], 2, ["{root}", "is the dataset"]),
    ("prepare --out inside the dataset", ["prepare", "{root}", "--out", "{root}/training/frames"], 2,
     ["lies inside the dataset"]),
    ("prepare --out an existing file", ["prepare", "{root}", "--out", W_ + "/file"], 2, [W_ + "/file", "is a file"]),
    ("train --out an existing file", ["train", "{store}", "--out", W_ + "/file"], 2, [W_ + "/file", "is a file"]),
    ("train --out the store", ["train", "{store}", "--out", "{store}"], 2, ["is the cube store"]),
    ("evaluate --out an existing file", ["evaluate", "{model}", "{store}", "--out", W_ + "/file"], 2, ["is a file"]),
    ("evaluate --set a network setting", ["evaluate", "{model}", "{store}", "--out", W_ + "/e", "--set", "model.skips=1"],
     2, ["--set model.skips: only score.* can be set here"]),
    ("evaluate --out inside the store", ["evaluate", "{model}", "{store}", "--out", "{store}/ev"], 2,
     ["lies inside the cube store"]),
    ("run --out an existing file", ["run", "{root}", "--out", W_ + "/file"], 2, ["is a file"]),
    ("demo --out an existing file", ["demo", "--out", W_ + "/file"], 2, ["is a file"]),
    ("fit --out a folder", ["fit", "{folder}", "--out", W_], 2, [W_, "is a folder"]),
    ("fit --work the source", ["fit", "{folder}", "--out", W_ + "/m.pt", "--work", "{folder}"], 2, ["is the source"]),
    ("export --onnx a folder", ["export", "{model}", "--onnx", W_], 2, [W_, "is a folder"]),
    ("export --onnx onto the model", ["export", "{model}", "--onnx", "{model}"], 2, ["is the model"]),
    ("an output under a file", ["score", "{model}", "{video}", "--csv", W_ + "/file/x.csv"], 2, ["is a file, not a folder"]),
    ("data synth onto a file", ["data", "synth", W_ + "/file"], 2, ["is a file"]),
    ("data synth, malformed size", ["data", "synth", W_ + "/s", "--size", "640by360"], 2, ["WIDTHxHEIGHT", "640by360"]),
    ("data synth, too small", ["data", "synth", W_ + "/s", "--size", "32x360"], 2, ["at least 64x64"]),
    # numbers and devices at the edge
    ("--threshold nan", ["score", "{model}", "{video}", "--threshold", "nan"], 2, ["--threshold", "a finite number"]),
    ("--min-frames -1", ["score", "{model}", "{video}", "--min-frames", "-1"], 2, ["--min-frames", "an integer >= 1"]),
    ("--fps -5", ["score", "{model}", "{folder}", "--fps", "-5"], 2, ["--fps", "a number > 0"]),
    ("--device tpu", ["score", "{model}", "{video}", "--device", "tpu"], 2, ["--device must be cpu, cuda or cuda:N"]),
    ("--epochs 0", ["train", "{store}", "--out", W_ + "/t", "--epochs", "0"], 2, ["--epochs"]),
    ("--workers 0", ["prepare", "{root}", "--out", W_ + "/s", "--workers", "0"], 2, ["--workers"]),
    # one contract between store, model and scoring
    ("evaluate a model on a store of other settings", ["evaluate", "{model}", "{store}", "--out", W_ + "/ev"], 2,
     ["{store}", "prepared with other settings", "boxes.min_area (store: 60, preset 'default': 10)"]),
    ("train --preset that disagrees with the store", ["train", "{store}", "--preset", "ped2", "--out", W_ + "/t"], 2,
     ["prepared with preset 'synthetic'", "disagrees with preset 'ped2'", "boxes.method"]),
    ("train --set of a prepare setting", ["train", "{store}", "--set", "prepare.cube_size=16", "--out", W_ + "/t"], 2,
     ["--set prepare.cube_size", "the cube store's"]),
    ("train --set of an unknown key", ["train", "{store}", "--set", "model.skip=1", "--out", W_ + "/t"], 2,
     ["model has no setting 'skip'", "skips"]),
    ("run --set of a wrong type", ["run", "{root}", "--set", "train.lr=fast", "--out", W_ + "/r"], 2,
     ["--set train.lr=fast: expected float"]),
]


@pytest.mark.parametrize("case,argv,rc,says", CASES, ids=[c[0] for c in CASES])
def test_cli_fault(world, tmp_path, capsys, case, argv, rc, says):
    work = tmp_path / "work"
    work.mkdir()
    (work / "file").write_text("not a folder\n")
    sub = {"work": str(work), **{k: str(v) for k, v in world.items()}}
    argv = [a.format(**sub) for a in argv]
    inputs = [world["model"], world["video"], world["root"], world["store"]]
    before = _digest(inputs)
    got, err = _run(argv, capsys)
    assert got == rc, err
    for s in says:
        assert s.format(**sub) in err, err
    assert "Traceback" not in err
    assert len([ln for ln in err.splitlines() if ln.startswith("error") or ": error:" in ln]) == 1, err  # one line, and argparse's usage
    assert _digest(inputs) == before  # no input touched
    assert (work / "file").read_text() == "not a folder\n"
    assert sorted(p.name for p in work.iterdir()) == ["file"]  # no output begun
    assert not _leftovers(world["dir"], work)


def test_unwritable_output_folder(world, tmp_path, capsys, monkeypatch):
    """Root ignores permission bits, so the folder refuses new files by a patched mkstemp (what EACCES looks like)."""
    import tempfile

    real = tempfile.mkstemp
    ro = tmp_path / "ro"
    ro.mkdir()

    def mkstemp(*a, dir=None, **k):
        if dir is not None and Path(dir) == ro:
            raise PermissionError(errno.EACCES, "Permission denied", str(dir))
        return real(*a, dir=dir, **k)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    for argv in (["score", world["model"], world["video"], "--csv", ro / "s.csv"],
                 ["prepare", world["root"], "--out", ro / "store"],
                 ["train", world["store"], "--out", ro / "t"],
                 ["evaluate", world["model"], world["store"], "--out", ro / "e"],
                 ["export", world["model"], "--onnx", ro / "m.onnx"],
                 ["fit", world["folder"], "--out", ro / "m.pt"]):
        rc, err = _run(argv, capsys)
        assert rc == 2 and f"{ro}" in err and "not writable" in err and "Traceback" not in err, err
    assert list(ro.iterdir()) == []


def test_device_cuda_on_cpu_torch(world, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    rc, err = _run(["score", world["model"], world["video"], "--device", "cuda"], capsys)
    assert rc == 2 and "no CUDA device is usable" in err and "--device cpu" in err


# ------------------------------------------------------------------ models that would score nonsense
def _bad_model(world, tmp_path, how: str) -> Path:
    ck = torch.load(world["model"], weights_only=True)
    if how == "nan":
        name = next(k for k, v in ck["model"].items() if v.is_floating_point())
        ck["model"][name] = torch.full_like(ck["model"][name], float("nan"))
    else:
        ck["train_stats"]["s_f_std"] = 0.0
    path = tmp_path / f"{how}.pt"
    torch.save(ck, path)
    return path


@pytest.mark.parametrize("how,says", [("nan", "NaN or infinite"), ("zero_std", "std of S_f")])
def test_model_that_would_score_nonsense_is_refused(world, tmp_path, capsys, how, says):
    bad = _bad_model(world, tmp_path, how)
    for argv in (["score", bad, world["video"], "--csv", tmp_path / "s.csv"],
                 ["evaluate", bad, world["store"], "--out", tmp_path / "ev"],
                 ["export", bad, "--onnx", tmp_path / "m.onnx"]):
        rc, err = _run(argv, capsys)
        assert rc == 2 and f"{bad}" in err and says in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == [bad.name]


def test_score_cubes_of_another_size_named(world):
    from amsrc.detector import AMSRC

    det = AMSRC.load(world["model"])
    with pytest.raises(ConfigError, match=r"appearance \(4, 5, 16, 16, 1\).*takes appearance \(N, 5, 32, 32, 1\)"):
        det.score_cubes(np.zeros((4, 5, 16, 16, 1), np.uint8), np.zeros((4, 4, 16, 16, 2), np.float16))


# ------------------------------------------------------------------ stores edited after preparing
def _edited_store(world, tmp_path, edit) -> Path:
    store = tmp_path / "store"
    shutil.copytree(world["store"], store)
    m = json.loads((store / "manifest.json").read_text())
    edit(m)
    (store / "manifest.json").write_text(json.dumps(m))
    return store


def _drop_test_clip(m):
    name = m["splits"]["testing"].pop()
    del m["clips"][f"testing/{name}"]


def _bad_clip_name(m):
    name = m["splits"]["testing"][0]
    m["splits"]["testing"][0] = "../../x"
    m["clips"]["testing/../../x"] = m["clips"].pop(f"testing/{name}")


@pytest.mark.parametrize("edit,says", [(_drop_test_clip, "edited after preparing"),
                                       (_bad_clip_name, "'../../x' cannot be a store folder name")])
def test_manifest_edited_after_preparing(world, tmp_path, capsys, edit, says):
    store = _edited_store(world, tmp_path, edit)
    rc, err = _run(["evaluate", world["model"], store, "--out", tmp_path / "ev"], capsys)
    assert rc == 2 and f"{store / 'manifest.json'}: " in err and says in err, err
    assert not (tmp_path / "ev").exists()


def test_train_takes_the_stores_settings(world):
    """No preset given: the store's preset and prepare settings; the model records the store's key."""
    import dataclasses

    from amsrc.detector import AMSRC
    from amsrc.prepare.store import CubeStore

    store = CubeStore.open(world["store"])
    p = AMSRC().resolved_preset(store)
    assert p.name == "synthetic"
    assert {k: v for k, v in dataclasses.asdict(p.prepare).items()} == \
        {k: v for k, v in json.loads(json.dumps(store.settings)).items() if k != "background"}
    with pytest.raises(ConfigError, match="disagrees with preset 'ped2'"):
        AMSRC(preset="ped2").fit(store, "unused")


def test_set_reaches_the_model_file(world, tmp_path, capsys):
    """``train --set`` changes the preset the model is trained with, and model.pt records it."""
    from amsrc.detector import AMSRC

    out = tmp_path / "t"
    rc, err = _run(["train", world["store"], "--out", out, "--epochs", "1", "--no-progress",
                    "--set", "model.skips=1", "--set", "model.widths=tiny", "--set", "train.lr=0.002"], capsys)
    assert rc == 0, err
    det = AMSRC.load(out / "model.pt")
    p = det.preset_
    assert (p.model.skips, p.model.widths, p.train.lr, p.train.epochs) == (1, (8, 16, 32, 64), 0.002, 1)
    assert not det.model_.up3.skip and det.model_.up1.skip


# ------------------------------------------------------------------ video truth comes from decoding
def _tick_avi(path: Path, n: int) -> Path:
    """An AVI whose header counts 1/50 s ticks, one frame every 2 ticks (XviD/DivX style)."""
    from fractions import Fraction

    import av

    frames = make_frames(n, h=H, w=W)
    with av.open(str(path), "w") as out:
        st = out.add_stream("mjpeg", rate=25)
        st.width, st.height, st.pix_fmt = W, H, "yuvj420p"
        st.codec_context.time_base = Fraction(1, 50)
        for i, f in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(f, format="rgb24")
            vf.pts, vf.time_base = 2 * i, Fraction(1, 50)
            for p in st.encode(vf):
                out.mux(p)
        for p in st.encode():
            out.mux(p)
    return path


def test_tick_header_avi_is_a_note_not_an_error(tmp_path, capsys, caplog):
    path = _tick_avi(tmp_path / "xvid.avi", 20)
    import av

    with av.open(str(path)) as c:
        assert c.streams.video[0].frames == 40  # the header: ticks, not frames
    rc, err = _run(["data", "check", path], capsys)
    assert rc == 0, err
    assert "header declares 40 frames, 20 decode cleanly" in caplog.text
    rc, err = _run(["data", "check", path, "--deep"], capsys)
    assert rc == 0, err


def _cut(video: Path, dst: Path, frac: float) -> Path:
    data = video.read_bytes()
    dst.write_bytes(data[: int(len(data) * frac)])
    return dst


@pytest.mark.parametrize("frac", [0.5, 0.75])
def test_truncated_video_is_never_scored_silently(world, tmp_path, capsys, frac):
    cut = _cut(world["video"], tmp_path / "cut.avi", frac)
    out = tmp_path / "s.csv"
    rc, err = _run(["score", world["model"], cut, "--csv", out], capsys)
    assert rc == 2 and f"{cut}: corrupt or truncated after frame" in err and "the last good one" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut.avi"]
    rc, err = _run(["score", world["model"], cut, "--csv", out, "--on-corrupt", "warn"], capsys)
    assert rc == 0 and "warning:" in err and "corrupt or truncated after frame" in err, err
    rows = out.read_text().splitlines()
    assert rows[0].startswith("# ") and 2 < len(rows) < 2 + 20  # the header comment, the columns, the frames
    rc, err = _run(["data", "check", cut], capsys)
    assert rc == 2 and f"{cut}" in err and "truncated" in err


def test_corrupt_jpeg_data_refused_by_deep_check(tmp_path, capsys):
    """Damaged entropy data with the end marker intact: libjpeg decodes it with a warning naming no file."""
    import cv2

    from amsrc.data.synth import write_scene as ws

    root = ws(tmp_path / "s", seed=1, height=H, width=W, n_train=1, n_test=1, train_frames=10, test_frames=60,
              min_walkers=1, max_walkers=1).root
    clip = sorted((root / "training" / "frames").iterdir())[0]
    frames = sorted(clip.iterdir())
    img = cv2.imread(str(frames[3]))
    for f in frames:  # as JPEGs
        cv2.imwrite(str(f.with_suffix(".jpg")), img)
        f.unlink()
    bad = clip / frames[3].with_suffix(".jpg").name
    b = bytearray(bad.read_bytes())
    n = len(b)
    b[n // 2 : n // 2 + 64] = np.random.default_rng(1).integers(0, 256, 64, dtype=np.uint8).tobytes()
    bad.write_bytes(bytes(b))
    assert _run(["data", "check", root], capsys)[0] == 0  # the quick check: the end marker is there
    rc, err = _run(["data", "check", root, "--deep"], capsys)
    assert rc == 2 and f"{bad}: corrupt JPEG data" in err, err


# ------------------------------------------------------------------ sizes capped, sources that yield nothing
def test_box_count_capped_with_a_note(caplog):
    from amsrc.config import BoxConfig
    from amsrc.prepare.boxes import MAX_BOXES, make_box_detector

    a = np.zeros((600, 800), np.uint8)
    b = a.copy()
    for y in range(10, 590, 20):
        for x in range(10, 790, 20):
            b[y : y + 9, x : x + 9] = 255  # 1131 separate blobs
    boxes = make_box_detector(BoxConfig())(a, b)
    assert len(boxes) == MAX_BOXES and f"only the {MAX_BOXES} largest are kept" in caplog.text


def test_source_with_no_frames_writes_nothing(world, tmp_path, capsys, monkeypatch):
    import io

    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"")))
    out = tmp_path / "s.csv"
    rc, err = _run(["score", world["model"], "-", "--stdin-size", f"{W}x{H}", "--csv", out], capsys)
    assert rc == 2 and "stdin: no frame could be read" in err, err
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------ disk full, Ctrl-C, a dead worker
def test_disk_full_while_scoring_leaves_nothing(world, tmp_path, capsys, monkeypatch):
    from amsrc.live import run as run_mod

    calls = {"n": 0}
    real = run_mod._Lines.frame

    def frame(self, rec):
        calls["n"] += 1
        if calls["n"] == 5:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(self, rec)

    monkeypatch.setattr(run_mod._Lines, "frame", frame)
    out = tmp_path / "s.csv"
    rc, err = _run(["score", world["model"], world["video"], "--csv", out, "--overlay", tmp_path / "o.mp4"], capsys)
    assert rc == 2 and "No space left on device" in err and f"{out}" in err and "Traceback" not in err, err
    assert list(tmp_path.iterdir()) == []


def test_disk_full_while_preparing_leaves_no_shard(world, tmp_path, capsys, monkeypatch):
    from amsrc.prepare import store as store_mod

    real = store_mod._NpyStream.append
    calls = {"n": 0}

    def append(self, arr):
        calls["n"] += 1
        if calls["n"] == 20:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(self, arr)

    monkeypatch.setattr(store_mod._NpyStream, "append", append)
    out = tmp_path / "store"
    rc, err = _run(["prepare", world["root"], "--preset", "synthetic", "--out", out, "--no-progress"], capsys)
    assert rc == 2 and "No space left on device" in err and f"while writing {out}" in err and "Traceback" not in err, err
    assert not _leftovers(tmp_path)
    assert not any(p.name.endswith(".npy") for p in out.rglob("*"))


def test_commit_refuses_to_replace_a_folder_that_is_not_a_shard(tmp_path):
    from amsrc.prepare.store import ClipWriter

    keep = tmp_path / "training" / "frames"
    keep.mkdir(parents=True)
    (keep / "0001.jpg").write_bytes(b"a user's frame")
    w = ClipWriter(tmp_path, "training", "frames", 32, 1)
    with pytest.raises(DataError, match="0001.jpg.*not part of a cube shard"):
        w.commit({"key": "k"})
    w.abort()
    assert (keep / "0001.jpg").read_bytes() == b"a user's frame"
    assert sorted(p.name for p in (tmp_path / "training").iterdir()) == ["frames"]


def test_interrupted_file_scoring_exits_130_with_what_was_scored(world, tmp_path, capsys, monkeypatch):
    ctrl_c_at_frame(monkeypatch, 8)
    out = tmp_path / "s.csv"
    rc, err = _run(["score", world["model"], world["video"], "--csv", out], capsys)
    assert rc == 130 and "interrupted" in err, err
    assert len(out.read_text().splitlines()) == 2 + 7  # the header comment, the columns, 7 frames
    assert not _leftovers(tmp_path)


def _die(job):  # a prepare worker that is killed mid-clip
    os.kill(os.getpid(), signal.SIGKILL)


def test_killed_prepare_worker_is_a_clear_error(world, tmp_path, monkeypatch):
    from amsrc.config import get_preset
    from amsrc.prepare import run as run_mod

    monkeypatch.setattr(run_mod, "_worker_run", _die)
    with pytest.raises(WorkerError, match="worker process died while preparing .*run the same command again"):
        run_mod.prepare_dataset(world["root"], get_preset("synthetic").prepare, tmp_path / "store", workers=2,
                                progress=False, preset_name="synthetic")


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[1] / "src")}


def test_ctrl_c_on_live_stdin_scoring_exits_130_without_fatal_error(world, tmp_path):
    out = tmp_path / "s.jsonl"
    p = subprocess.Popen([sys.executable, "-m", "amsrc.cli", "score", str(world["model"]), "-", "--stdin-size",
                          f"{W}x{H}", "--fps", "25", "--jsonl", str(out)], stdin=subprocess.PIPE,
                         stderr=subprocess.PIPE, env=_env())
    frame = make_frames(1, h=H, w=W)[0].tobytes()
    p.stdin.write(frame * 10)
    p.stdin.flush()
    deadline = time.time() + 60
    while time.time() < deadline and (not out.exists() or len(out.read_text().splitlines()) < 10):
        time.sleep(0.2)
    p.send_signal(signal.SIGINT)  # stdin still open: the reading thread is blocked in a read
    _, err = p.communicate(timeout=60)
    err = err.decode()
    assert p.returncode == 130, err
    assert "Fatal Python error" not in err and "Traceback" not in err, err
    assert len([r for r in out.read_text().splitlines() if '"frame"' in r]) >= 10


def test_strict_size_refusal_on_stdin_without_fatal_error(world):
    p = subprocess.run([sys.executable, "-m", "amsrc.cli", "score", str(world["model"]), "-", "--stdin-size",
                        f"{2 * W}x{2 * H}", "--strict-size", "--fps", "25"],
                       input=make_frames(30, h=2 * H, w=2 * W).tobytes(), capture_output=True, env=_env(), timeout=120)
    err = p.stderr.decode()
    assert p.returncode == 2, err
    assert "--strict-size" in err and "Fatal Python error" not in err and "Traceback" not in err, err


def test_disk_full_while_training_leaves_no_checkpoint(world, tmp_path, capsys, monkeypatch):
    """torch.save fails with ENOSPC at the first checkpoint: one line naming the output, no temporary file."""
    real = torch.save

    def save(obj, f, *a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", save)
    out = tmp_path / "train"
    rc, err = _run(["train", world["store"], "--out", out, "--epochs", "1", "--no-progress"], capsys)
    monkeypatch.setattr(torch, "save", real)
    assert rc == 2 and "No space left on device" in err and f"while writing {out}" in err and "Traceback" not in err, err
    assert not _leftovers(tmp_path)
    assert not any(p.suffix == ".pt" for p in out.rglob("*"))


# ------------------------------------------------------------------ --help
def _subparsers(parser, path=()):
    """(command path, parser) for every subcommand, nested ones included."""
    import argparse

    for a in parser._actions:
        if isinstance(a, argparse._SubParsersAction):
            for name, sp in a.choices.items():
                yield " ".join((*path, name)), sp
                yield from _subparsers(sp, (*path, name))


def _options(parser):
    """(command path, action) for every option of the program and of every subcommand."""
    import argparse

    for cmd, sp in [("", parser), *_subparsers(parser)]:
        for a in sp._actions:
            if not isinstance(a, (argparse._SubParsersAction, argparse._HelpAction)):
                yield cmd, a


def test_every_option_has_help_and_says_its_default():
    from amsrc.cli import build_parser
    from amsrc.config import preset_names
    from amsrc.model.network import variant_names

    parser = build_parser()
    opts = list(_options(parser))
    assert len({cmd for cmd, _ in opts}) >= 12  # every subcommand was walked
    for cmd, a in opts:
        assert a.help, f"amsrc {cmd} {a.option_strings or a.dest} has no help"
        if a.dest == "preset":
            assert list(a.choices) == preset_names(), cmd
        if a.dest == "variant":
            assert list(a.choices) == variant_names(), cmd
    helps = {cmd: " ".join(sp.format_help().split()) for cmd, sp in _subparsers(parser)}
    assert "one of amsrc, baseline, nogate" in helps["train"] and "(default: None)" not in helps["train"]
    assert "(default: default)" in helps["prepare"] and "(default: 1)" in helps["prepare"]  # --preset, --workers
    assert "(default cpu) (default" not in helps["score"]  # a help that names its default gets no second one



# ------------------------------------------------------------------ logs
@pytest.mark.parametrize("quiet", [False, True])
def test_logs_in_a_file_are_lines_not_bars(world, tmp_path, quiet):
    """stderr to a file: no carriage-return progress bars; one line per epoch and per prepared clip,
    the loss terms named once; -q keeps only warnings and errors."""
    log_path = tmp_path / "log.txt"
    q = ["-q"] if quiet else []
    with open(log_path, "wb") as fh:
        for argv in (["prepare", str(world["root"]), "--preset", "synthetic", "--out", str(tmp_path / "s"), *q],
                     ["train", str(tmp_path / "s"), "--out", str(tmp_path / "t"), "--epochs", "2",
                      "--set", "model.widths=tiny", *q]):
            subprocess.run([sys.executable, "-m", "amsrc.cli", *argv], stderr=fh, stdout=subprocess.DEVNULL,
                           env=_env(), check=True, timeout=300)
    text = log_path.read_bytes().decode()
    assert "\r" not in text
    epochs = [ln for ln in text.splitlines() if ln.startswith("epoch ")]
    clips = [ln for ln in text.splitlines() if ln.startswith("prepare: ") and " done " in ln]
    if quiet:
        assert epochs == [] and clips == [] and "loss = intensity" not in text, text
    else:
        assert [ln.split()[1] for ln in epochs] == ["1/2", "2/2"] and "weight decay" in epochs[0], text
        assert len(clips) == 2, text  # the scene's two clips
        assert text.count("loss = intensity (mean squared error") == 1


def test_prepare_and_run_take_box_and_flow_settings(tmp_path, capsys):
    """``prepare --set boxes.*/flow.*`` records the settings in the store; train takes them from there;
    ``run --set`` prepares with them; a detector path is read as a path."""
    from amsrc.cli import main
    from amsrc.config import apply_overrides, get_preset
    from amsrc.data.synth import write_scene
    from amsrc.prepare.store import CubeStore

    root = tmp_path / "scene"
    write_scene(root, seed=0, height=64, width=96, n_train=1, n_test=1, train_frames=12, test_frames=60,
                min_walkers=1, max_walkers=2)
    store = tmp_path / "store"
    assert main(["prepare", str(root), "--preset", "synthetic", "--out", str(store), "-q",
                 "--set", "boxes.persist=2", "--set", "flow.dis_refine=3", "--set", "prepare.cube_size=16"]) == 0
    s = CubeStore.open(store)
    assert s.settings["boxes"]["persist"] == 2 and s.settings["flow"]["dis_refine"] == 3 and s.settings["cube_size"] == 16
    p = apply_overrides(get_preset("ped2"), ["boxes.detector_onnx=/models/yolo v10.onnx"], allowed=("boxes",))
    assert p.prepare.boxes.detector_onnx == "/models/yolo v10.onnx"
    assert main(["prepare", str(root), "--out", str(tmp_path / "s2"), "--set", "boxes.persist=two", "-q"]) == 2
    assert "--set boxes.persist=two: expected int" in capsys.readouterr().err
    # a detector file that is not there: exit 2 naming it, before anything is written
    assert main(["prepare", str(root), "--out", str(tmp_path / "s3"), "-q", "--set", "boxes.method=det+diff",
                 "--set", f"boxes.detector_onnx={tmp_path / 'none.onnx'}"]) == 2
    assert f"{tmp_path / 'none.onnx'}: the ONNX detector file" in capsys.readouterr().err
    assert not (tmp_path / "s3").exists()
    out = tmp_path / "run"
    assert main(["run", str(root), "--preset", "synthetic", "--out", str(out), "--epochs", "1", "-q",
                 "--set", "boxes.persist=1", "--set", "model.widths=tiny"]) == 0
    assert CubeStore.open(out / "cubes").settings["boxes"]["persist"] == 1
