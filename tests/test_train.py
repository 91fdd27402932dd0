"""The training loop: learning, determinism, resume, checkpoints, torchrun (train.py)."""

from __future__ import annotations

import csv
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import amsrc.training.loop as train_mod
from amsrc import __version__
from amsrc.config import ModelConfig, Preset, get_preset
from amsrc.errors import ConfigError, DataError
from amsrc.model.network import build_model
from amsrc.scoring import object_scores
from amsrc.training.checkpoint import Checkpoint
from amsrc.training.loop import train_model

torch.set_num_threads(1)


def load_checkpoint(path):
    """(model in eval mode, preset, train stats dict) of a final checkpoint, read by the one reader."""
    ck = Checkpoint.load(path)
    return ck.build_model(source=path), ck.preset, ck.train_stats.to_dict()


def moving_squares(n: int, seed: int = 0, s: int = 32, size: int = 8):
    """Learnable cubes: a bright square moving at a constant velocity, with its flow."""
    rng = np.random.default_rng(seed)
    app = np.full((n, 5, s, s, 1), 30, np.uint8)  # (N, 5, S, S, 1) uint8
    flow = np.zeros((n, 4, s, s, 2), np.float16)  # (N, 4, S, S, 2) float16
    for i in range(n):
        vx, vy = (int(v) for v in rng.integers(-2, 3, size=2))
        x0, y0 = int(rng.integers(4, s - size - 4)) - 2 * vx, int(rng.integers(4, s - size - 4)) - 2 * vy
        for k in range(5):
            x, y = x0 + k * vx, y0 + k * vy
            app[i, k, y : y + size, x : x + size] = 200
            if k < 4:
                flow[i, k, y : y + size, x : x + size] = (vx, vy)
    return app, flow


def tiny_preset(epochs: int = 3, **train) -> Preset:
    p = get_preset("synthetic")
    p.model.widths = ModelConfig.WIDTH_PRESETS["tiny"]
    p.train.epochs = epochs
    p.train.batch_size = 32
    p.train.threads = 1
    for k, v in train.items():
        setattr(p.train, k, v)
    return p


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """~200 random cubes in two memory-mapped clips (as the cube store hands them over)."""
    d = tmp_path_factory.mktemp("cubes")
    rng = np.random.default_rng(1)
    out = []
    for name, n in (("c1", 90), ("c2", 110)):
        np.save(d / f"{name}_app.npy", rng.integers(0, 256, (n, 5, 32, 32, 1), dtype=np.uint8))
        np.save(d / f"{name}_flow.npy", rng.normal(size=(n, 4, 32, 32, 2)).astype(np.float16))
        out.append((np.load(d / f"{name}_app.npy", mmap_mode="r"), np.load(d / f"{name}_flow.npy", mmap_mode="r")))
    return out


def _states_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _log(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.parametrize("standardise,consistency", [(False, "cosine"), (True, "cosine"), (True, "squared")])
def test_training_reduces_the_loss(tmp_path, standardise, consistency):
    app, flow = moving_squares(256)
    preset = tiny_preset(epochs=8, lr=4e-3, batch_size=16)
    preset.model.standardise = standardise
    preset.model.consistency = consistency
    path = train_model([(app, flow)], preset, tmp_path, progress=False)
    rows = _log(tmp_path / "train_log.csv")
    assert [int(r["epoch"]) for r in rows] == list(range(1, 9))
    assert list(rows[0]) == train_mod.LOG_FIELDS
    first, last = rows[0], rows[-1]
    assert float(last["loss"]) < 0.3 * float(first["loss"])
    assert float(last["intensity"]) < 0.25 * float(first["intensity"])
    assert float(last["consistency"]) < 0.1 * float(first["consistency"])
    # the final model's prediction error is far below that of the initial weights (same seed) ...
    torch.manual_seed(preset.train.seed)
    init = build_model(preset.model, 1, 32)
    s_p_init = object_scores(init, app, flow, preset.model.flow_scale).s_p.mean()
    stats = torch.load(path, weights_only=True)["train_stats"]
    assert stats["s_p_mean"] < 0.2 * s_p_init
    # ... and, with the paper's raw bottlenecks, below that of copying frame t-1 as the prediction:
    # it learned the motion. Standardised bottlenecks keep the consistency term active (it cannot
    # collapse), and it competes with the prediction: here after 8 epochs S_p is 17.7 against 15.5
    # for the copy (on Ped2 the final intensity loss is ~15% above the baseline variant's).
    copy_last = (((app[:, 4].astype(np.float64) - app[:, 3]) / 255) ** 2).sum(axis=(1, 2, 3)).mean()
    if not standardise:
        assert stats["s_p_mean"] < 0.8 * copy_last


def test_seeded_runs_are_identical(clips, tmp_path):
    runs = {}
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        path = train_model(clips, tiny_preset(epochs=1, seed=seed), tmp_path / name, progress=False)
        runs[name] = torch.load(path, weights_only=True)
    assert _states_equal(runs["a"]["model"], runs["b"]["model"])
    assert runs["a"]["train_stats"] == runs["b"]["train_stats"]
    assert not _states_equal(runs["a"]["model"], runs["c"]["model"])


def test_resume_equals_uninterrupted(clips, tmp_path, monkeypatch):
    straight = train_model(clips, tiny_preset(epochs=3), tmp_path / "straight", progress=False)

    real_write_log = train_mod._write_log

    def write_log_then_die(path, rows):  # the process dies right after epoch 2 was saved
        real_write_log(path, rows)
        if int(rows[-1]["epoch"]) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(train_mod, "_write_log", write_log_then_die)
    with pytest.raises(KeyboardInterrupt):
        train_model(clips, tiny_preset(epochs=3), tmp_path / "resumed", progress=False)
    monkeypatch.setattr(train_mod, "_write_log", real_write_log)
    assert not (tmp_path / "resumed" / "model.pt").exists()
    assert torch.load(tmp_path / "resumed" / "last.pt", weights_only=True)["epoch"] == 2

    resumed = train_model(clips, tiny_preset(epochs=3), tmp_path / "resumed", resume=True, progress=False)
    a, b = torch.load(straight, weights_only=True), torch.load(resumed, weights_only=True)
    assert a["epoch"] == b["epoch"] == 3
    assert _states_equal(a["model"], b["model"])
    assert a["train_stats"] == b["train_stats"]
    la, lb = _log(tmp_path / "straight" / "train_log.csv"), _log(tmp_path / "resumed" / "train_log.csv")
    assert [r["epoch"] for r in lb] == ["1", "2", "3"]
    for ra, rb in zip(la, lb):
        assert [ra[k] for k in ("lr", "loss", "intensity", "consistency")] == [rb[k] for k in ("lr", "loss", "intensity", "consistency")]

    # resuming with other settings or other data is refused
    with pytest.raises(ConfigError, match="train.lr"):
        train_model(clips, tiny_preset(epochs=3, lr=5e-4), tmp_path / "resumed", resume=True, progress=False)
    with pytest.raises(DataError, match="200 cubes"):
        train_model(clips[:1], tiny_preset(epochs=3), tmp_path / "resumed", resume=True, progress=False)


def test_checkpoint_contents_and_loading(clips, tmp_path):
    preset = tiny_preset(epochs=1)
    path = train_model(clips, preset, tmp_path, progress=False)
    assert path == tmp_path / "model.pt"
    ck = torch.load(path, weights_only=True)
    assert {"model", "config", "train_stats", "version", "epoch"} <= set(ck)
    assert ck["config"] == preset.to_dict() and ck["version"] == __version__ and ck["epoch"] == 1
    last = torch.load(tmp_path / "last.pt", weights_only=True)
    assert {"model", "optimizer", "scheduler", "rng", "config", "epoch", "version"} <= set(last)

    model, loaded, stats = load_checkpoint(path)
    assert loaded.to_dict() == preset.to_dict() and not model.training
    # the stored statistics are the mean / std of the scores of ALL training cubes under the final model
    scores = [object_scores(model, a, f, preset.model.flow_scale) for a, f in clips]
    s_f = np.concatenate([s.s_f for s in scores]).astype(np.float64)
    s_p = np.concatenate([s.s_p for s in scores]).astype(np.float64)
    assert len(s_f) == 200
    assert stats["s_f_mean"] == pytest.approx(s_f.mean(), rel=1e-5)
    assert stats["s_f_std"] == pytest.approx(s_f.std(), rel=1e-3)
    assert stats["s_p_mean"] == pytest.approx(s_p.mean(), rel=1e-5)
    assert stats["s_p_std"] == pytest.approx(s_p.std(), rel=1e-3)

    with pytest.raises(DataError, match="training state"):
        load_checkpoint(tmp_path / "last.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(DataError, match="not an amsrc checkpoint"):
        load_checkpoint(tmp_path / "junk.pt")
    # a plain dict with the four keys (no "format") is accepted too, e.g. one written by AMSRC.save
    plain = {k: ck[k] for k in ("model", "config", "train_stats", "version")}
    torch.save(plain, tmp_path / "plain.pt")
    _, _, stats2 = load_checkpoint(tmp_path / "plain.pt")
    assert stats2 == stats
    torch.save({"model": {}}, tmp_path / "other.pt")
    with pytest.raises(DataError, match="not an amsrc model checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    with pytest.raises(DataError, match="no such"):
        load_checkpoint(tmp_path / "missing.pt")


def test_bad_training_data(tmp_path):
    app, flow = moving_squares(4)
    with pytest.raises(DataError, match="no training cubes"):
        train_model([(app[:0], flow[:0])], tiny_preset(), tmp_path, progress=False)
    with pytest.raises(DataError, match="channels"):
        train_model([(np.repeat(app, 3, axis=4), flow)], tiny_preset(), tmp_path, progress=False)
    assert not list(tmp_path.iterdir())  # nothing written


@pytest.mark.slow
def test_torchrun_two_processes(tmp_path):
    """Two processes of 16 cubes each train like one process of 32: the same cubes in every step, the
    gradients averaged. BatchNorm normalises per process, so they are not equal; measured (150 cubes,
    1 epoch, tiny widths): loss 1.0957 vs 1.0768, s_p mean 97.99 vs 98.05. A run that took 16-cube steps
    alone (what unsynchronised ranks see) is much further off: loss 0.9855, s_p mean 92.17."""
    app, flow = moving_squares(150, seed=3)
    np.save(tmp_path / "app.npy", app)
    np.save(tmp_path / "flow.npy", flow)
    script = tmp_path / "drive.py"
    script.write_text(
        "import sys, numpy as np\n"
        "from amsrc.config import ModelConfig, get_preset\n"
        "from amsrc.training.loop import train_model\n"
        "d = sys.argv[1]\n"
        "data = [(np.load(d + '/app.npy', mmap_mode='r'), np.load(d + '/flow.npy', mmap_mode='r'))]\n"
        "p = get_preset('synthetic'); p.model.widths = ModelConfig.WIDTH_PRESETS['tiny']\n"
        "p.train.epochs = 1; p.train.batch_size = int(sys.argv[3]); p.train.threads = 1\n"
        "train_model(data, p, d + '/' + sys.argv[2], progress=False)\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    runs = {"ddp": ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script), str(tmp_path),
                    "ddp", "32"],
            "one": [str(script), str(tmp_path), "one", "32"], "half": [str(script), str(tmp_path), "half", "16"]}
    for name, args in runs.items():
        res = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=180, env=env)
        assert res.returncode == 0, name + res.stdout[-2000:] + res.stderr[-3000:]
    assert torch.load(tmp_path / "ddp" / "last.pt", weights_only=True)["world_size"] == 2
    assert torch.load(tmp_path / "one" / "last.pt", weights_only=True)["world_size"] == 1
    loss = {k: float(_log(tmp_path / k / "train_log.csv")[0]["loss"]) for k in runs}
    assert abs(loss["ddp"] - loss["one"]) < 0.05 * loss["one"], loss
    assert abs(loss["ddp"] - loss["one"]) < 0.5 * abs(loss["half"] - loss["one"]), loss
    sp = {k: Checkpoint.load(tmp_path / k / "model.pt").train_stats.s_p_mean for k in runs}
    assert sp["ddp"] == pytest.approx(sp["one"], rel=0.01), sp
    assert abs(sp["half"] - sp["one"]) > 0.03 * sp["one"], sp
    # both processes' shares were scored: the stored statistics are those of all 150 cubes
    model, preset, stats = load_checkpoint(tmp_path / "ddp" / "model.pt")
    sc = object_scores(model, app, flow, preset.model.flow_scale)
    assert stats["s_p_mean"] == pytest.approx(float(sc.s_p.astype(np.float64).mean()), rel=1e-5)
    assert stats["s_f_mean"] == pytest.approx(float(sc.s_f.astype(np.float64).mean()), rel=1e-5)


def test_motion_memory_in_the_checkpoint(clips, tmp_path):
    """S_m's memory: the pooled motion bottlenecks of (up to bank_size) training cubes, and S_m's statistics
    over ALL training cubes, each measured against the memory entries of the other clip."""
    from amsrc.scoring import motion_rarity
    from amsrc.training.loop import CubeSet, memory_groups

    preset = tiny_preset(epochs=1, bank_size=150, bank_k=3)
    path = train_model(clips, preset, tmp_path, progress=False)
    ck = Checkpoint.load(path)
    model = ck.build_model(source=path)
    assert ck.motion_bank.shape == (150, preset.model.widths[3]) and ck.motion_bank.dtype == np.float32
    m = np.concatenate([object_scores(model, a, f, preset.model.flow_scale, need_pred=False, keep_m=True).m
                        for a, f in clips])
    assert m.shape == (200, preset.model.widths[3])
    # every memory entry is one training cube's pooled motion bottleneck
    d = np.abs(ck.motion_bank[:, None, :] - m[None]).max(2).min(1)
    assert d.max() < 1e-5
    groups = memory_groups(CubeSet(clips, 1, 32))
    assert np.bincount(groups).tolist() == [90, 110]
    bank_groups = groups[np.abs(ck.motion_bank[:, None, :] - m[None]).max(2).argmin(1)]
    s_m = motion_rarity(m, ck.motion_bank, 3, groups, bank_groups).double().numpy()
    assert ck.train_stats.s_m_mean == pytest.approx(s_m.mean(), rel=1e-4)
    assert ck.train_stats.s_m_std == pytest.approx(s_m.std(), rel=1e-3)
    # scoring computes S_m only where the score weighs it (w_m = 0 here), or when asked (evaluation reports it)
    from amsrc.detector import AMSRC

    det = AMSRC.load(path, engine="torch")
    a, f = clips[0]
    lean, full = det.score_cubes(a[:20], f[:20]), det.score_cubes(a[:20], f[:20], need_m=True)
    assert np.isnan(lean.s_m).all() and np.isfinite(full.s_m).all()
    np.testing.assert_array_equal(lean.combined, full.combined)
    ref = object_scores(model, a[:20], f[:20], preset.model.flow_scale, bank=ck.motion_bank, bank_k=3).s_m
    np.testing.assert_allclose(full.s_m, ref, rtol=1e-6)
    # the memory is built after the last epoch: a finished run resumed with other memory settings keeps
    # its weights and gets the new memory
    ck2 = Checkpoint.load(train_model(clips, tiny_preset(epochs=1, bank_size=60, bank_k=3), tmp_path, resume=True,
                                      progress=False))
    assert ck2.motion_bank.shape[0] == 60 and _states_equal(ck2.model, ck.model)
    # so are the score settings (they never reach training); a training setting is refused
    p3 = tiny_preset(epochs=1, bank_size=60, bank_k=3)
    p3.score.edge_min_side, p3.score.w_p = 16, 0.3
    ck3 = Checkpoint.load(train_model(clips, p3, tmp_path, resume=True, progress=False))
    assert ck3.preset.score.edge_min_side == 16 and _states_equal(ck3.model, ck.model)
    p3.train.lr *= 2
    with pytest.raises(ConfigError, match="train.lr"):
        train_model(clips, p3, tmp_path, resume=True, progress=False)
    # a run written before a setting existed (here prepare.scale) resumes: the setting reads at the
    # value that reproduces it
    from amsrc.training.checkpoint import load_state, save_state

    state = load_state(tmp_path / "last.pt")
    del state["config"]["prepare"]["scale"]
    save_state({k: v for k, v in state.items() if k not in ("format", "version")}, tmp_path / "last.pt")
    ck4 = Checkpoint.load(train_model(clips, tiny_preset(epochs=1, bank_size=60, bank_k=3), tmp_path, resume=True,
                                      progress=False))
    assert _states_equal(ck4.model, ck.model)
    # one clip: its 4 consecutive parts are the groups
    one = memory_groups(CubeSet(clips[:1], 1, 32))
    assert np.bincount(one).tolist() == [23, 22, 23, 22] and np.all(np.diff(one) >= 0)
    # no memory for the baseline (no motion stream) or with bank_size 0
    p0 = tiny_preset(epochs=1, bank_size=0)
    ck0 = Checkpoint.load(train_model(clips, p0, tmp_path / "b0", progress=False))
    assert ck0.motion_bank is None and ck0.train_stats.s_m_mean is None


def test_calibration_cubes_in_the_checkpoint(clips, tmp_path):
    """train.calib_size training cubes, drawn from every clip, are kept in model.pt for the int8 engine;
    a finished run resumed with another size keeps its weights; 0 keeps none; a damaged entry is refused."""
    path = train_model(clips, tiny_preset(epochs=1, calib_size=50), tmp_path, progress=False)
    ck = Checkpoint.load(path)
    a, f = ck.calibration
    assert a.shape == (50, 5, 32, 32, 1) and a.dtype == np.uint8 and f.shape == (50, 4, 32, 32, 2) and f.dtype == np.float16
    train_a = np.concatenate([np.asarray(x) for x, _ in clips]).reshape(200, -1)
    train_f = np.concatenate([np.asarray(y) for _, y in clips]).reshape(200, -1)
    where = [int(np.flatnonzero((train_a == row).all(1))[0]) for row in a.reshape(50, -1)]  # each is a training cube
    assert len(set(where)) == 50 and min(where) < 90 <= max(where)  # 50 distinct cubes, from both clips
    np.testing.assert_array_equal(train_f[where], f.reshape(50, -1))  # with its own flow
    ck2 = Checkpoint.load(train_model(clips, tiny_preset(epochs=1, calib_size=500), tmp_path, resume=True, progress=False))
    assert len(ck2.calibration[0]) == 200 and _states_equal(ck2.model, ck.model)  # all of them, same weights
    ck0 = Checkpoint.load(train_model(clips, tiny_preset(epochs=1, calib_size=0), tmp_path, resume=True, progress=False))
    assert ck0.calibration is None
    state = ck.to_dict()
    state["calibration"]["flow"] = state["calibration"]["flow"][:, :3]
    torch.save(state, tmp_path / "bad.pt")
    with pytest.raises(DataError, match=r"bad.pt.*calibration cubes must be appearance \(N, 5, 32, 32, 1\) uint8"):
        Checkpoint.load(tmp_path / "bad.pt")


def test_motion_rarity_flags_motion_faster_than_training(tmp_path):
    """Behaviour: trained on squares moving <= 2 px/frame, S_m ranks the same squares with 3x their flow
    above every normal one of a held-out set."""
    from amsrc.eval.metrics import roc_auc

    app, flow = moving_squares(240, seed=0)
    preset = tiny_preset(epochs=2, bank_k=5)
    ck = Checkpoint.load(train_model([(app[:120], flow[:120]), (app[120:], flow[120:])], preset, tmp_path,
                                     progress=False))
    model = ck.build_model()
    t_app, t_flow = moving_squares(60, seed=9)
    moving = np.abs(t_flow[:, -1]).reshape(60, -1).max(1) > 0  # squares at rest have no motion to speed up
    fast = (t_flow.astype(np.float32) * 3).astype(np.float16)
    sm = [object_scores(model, t_app[moving], f[moving], preset.model.flow_scale, bank=ck.motion_bank,
                        bank_k=5).s_m for f in (t_flow, fast)]
    y = np.r_[np.zeros(moving.sum()), np.ones(moving.sum())]
    assert roc_auc(np.concatenate(sm), y) >= 0.95


def test_speed_in_the_motion_memory(clips, tmp_path):
    """train.bank_speed > 0: each memory entry is a training cube's pooled motion bottleneck followed by its
    standardised speed times bank_speed * the bottleneck's spread; the checkpoint, the detector, the
    exported ONNX graph and a resumed run with the speed switched off all agree on it."""
    from amsrc.detector import AMSRC
    from amsrc.model.inputs import to_tensors
    from amsrc.prepare.features import mean_l1_speeds
    from amsrc.scoring import memory_key, motion_rarity, object_speed
    from amsrc.training.loop import CubeSet, memory_groups

    preset = tiny_preset(epochs=1, bank_size=150, bank_k=3, bank_speed=0.5)
    path = train_model(clips, preset, tmp_path, progress=False)
    ck = Checkpoint.load(path)
    w3 = preset.model.widths[3]
    assert ck.motion_bank.shape == (150, w3 + 1)
    model = ck.build_model(source=path)
    m = np.concatenate([object_scores(model, a, f, preset.model.flow_scale, need_pred=False, keep_m=True).m
                        for a, f in clips]).astype(np.float64)
    v = np.concatenate([mean_l1_speeds(f).astype(np.float64) / preset.model.flow_scale for _, f in clips])
    # the speed of the network's input: the velocity baseline's feature / flow_scale
    a0, f0 = clips[0]
    flow_in = to_tensors(a0[:5], f0[:5], preset.model.flow_scale)[2]
    np.testing.assert_allclose(object_speed(flow_in).numpy(), v[:5], rtol=1e-5)
    mean, scale = ck.train_stats.speed_key
    assert mean == pytest.approx(v.mean(), rel=1e-6)
    assert scale == pytest.approx(0.5 * np.sqrt(m.var(0).sum()) / v.std(), rel=1e-4)
    key = np.c_[m, (v - mean) * scale]
    # the speed column's spread is half the bottleneck's, as asked
    assert key[:, -1].std() == pytest.approx(0.5 * np.sqrt(m.var(0).sum()), rel=1e-4)
    assert np.abs(ck.motion_bank[:, None, :] - key[None]).max(2).min(1).max() < 1e-4
    groups = memory_groups(CubeSet(clips, 1, 32))
    bank_groups = groups[np.abs(ck.motion_bank[:, None, :] - key[None]).max(2).argmin(1)]
    s_m = motion_rarity(key, ck.motion_bank, 3, groups, bank_groups).double().numpy()
    assert ck.train_stats.s_m_mean == pytest.approx(s_m.mean(), rel=1e-4)
    # scoring keys the object the same way: twice the speed moves S_m, the bottleneck alone would not see it
    det = AMSRC.load(path, engine="torch")
    got = det.score_cubes(a0[:20], f0[:20], need_m=True).s_m
    ref = motion_rarity(torch.from_numpy(key[:20]).float(), ck.motion_bank, 3).numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)
    m_t = torch.from_numpy(m[:2]).float()
    k2 = memory_key(m_t, torch.cat([flow_in[:2, :6], 2 * flow_in[:2, 6:]], 1), (mean, scale))
    np.testing.assert_allclose(k2[:, -1].numpy(), (2 * v[:2] - mean) * scale, rtol=1e-4)
    assert memory_key(m_t, flow_in[:2], None) is m_t
    # the ONNX file computes the same S_m (its memory and speed key are constants of the graph)
    pytest.importorskip("onnxruntime")
    from amsrc.export import check_onnx, export_onnx

    onnx_path = export_onnx(path, tmp_path / "m.onnx")
    chk = check_onnx(onnx_path, path, appearance=a0[:7], flow=f0[:7])
    assert chk.ok and chk.max_abs["s_m"] < 1e-3, chk.max_abs
    # a bad width is refused when loaded, naming the file
    state = torch.load(path, weights_only=True)
    state["motion_bank"] = state["motion_bank"][:, :w3]
    torch.save(state, tmp_path / "bad.pt")
    with pytest.raises(DataError, match=rf"bad.pt.*\(K >= 3, {w3 + 1}\)"):
        Checkpoint.load(tmp_path / "bad.pt")
    # resumed with the speed off: same weights, a memory of the bottleneck alone
    ck2 = Checkpoint.load(train_model(clips, tiny_preset(epochs=1, bank_size=150, bank_k=3), tmp_path, resume=True,
                                      progress=False))
    assert _states_equal(ck2.model, ck.model) and ck2.motion_bank.shape == (150, w3) and ck2.train_stats.speed_key is None
    with pytest.raises(ConfigError, match="bank_speed"):
        train_model(clips, tiny_preset(epochs=1, bank_speed=-1.0), tmp_path / "neg", progress=False)


def test_score_needing_s_m_without_memory(clips, tmp_path):
    """score.w_m != 0 needs a memory: refused before training for the baseline or bank_size 0; a checkpoint
    that claims the weight without holding a memory is refused when loaded, naming the file."""
    for kw in ({"bank_size": 0}, {}):
        p = tiny_preset(epochs=1, **kw)
        p.score.w_m = 0.5
        if not kw:
            p.model.variant = "baseline"
        with pytest.raises(ConfigError, match="w_m"):
            train_model(clips, p, tmp_path / "x", progress=False)
        assert not (tmp_path / "x").exists()
    p = tiny_preset(epochs=1, bank_size=0)
    path = train_model(clips, p, tmp_path, progress=False)
    ck = torch.load(path, weights_only=True)
    ck["config"]["score"]["w_m"] = 0.5
    torch.save(ck, tmp_path / "bad.pt")
    with pytest.raises(DataError, match=r"bad\.pt.*no S_m memory"):
        Checkpoint.load(tmp_path / "bad.pt")
    p = tiny_preset(epochs=1)
    p.score.w_m = 0.5
    with pytest.raises(DataError, match="too few for S_m"):
        train_model([(app[:4], flow[:4]) for app, flow in [moving_squares(4)]], p, tmp_path / "y", progress=False)
