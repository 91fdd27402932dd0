"""The whole pipeline: synthetic demo (AUROC floor) and a real Ped2 subset (exact counts)."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pytest
import torch

from amsrc.cli import main

PED2 = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "ped2"


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """`amsrc demo` exactly as the README runs it (seed-0 scene, synthetic preset)."""
    out = tmp_path_factory.mktemp("demo")
    assert main(["demo", "--out", str(out), "--no-progress"]) == 0
    return out


def test_demo_reaches_auroc_floor(demo_run):
    res = json.loads((demo_run / "eval_amsrc" / "results.json").read_text())
    # The synthetic preset's settings were chosen on a seed-1 scene; this is the seed-0 scene.
    assert res["smoothed"]["micro"] >= 0.90, res["smoothed"]
    assert res["raw"]["micro"] >= 0.85, res["raw"]
    # the evaluated model is the last epoch's: model.pt holds the weights last.pt saved after epoch 15
    from amsrc.training.checkpoint import Checkpoint, load_state

    final = Checkpoint.load(demo_run / "train_amsrc" / "model.pt")
    last = load_state(demo_run / "train_amsrc" / "last.pt")
    assert final.epoch == last["epoch"] == res["epochs"] == final.preset.train.epochs
    assert all(torch.equal(final.model[k], last["model"][k]) for k in final.model)
    # every test frame of every clip got a score, and the labels are the dataset's
    assert res["raw"]["n_frames"] == 480 and res["raw"]["n_anomalous"] == 265
    for clip in res["clips"].values():
        assert len(clip["scores_raw"]) == clip["frames"] == len(clip["labels"])
        assert np.all(np.isfinite(clip["scores_raw"]))
    assert res["plots"] == ["score_curves.png", "error_maps.png", "report.html"]
    # score_curves.png: one 3.2 x 2.0 inch panel per clip at 100 dpi, each drawing its curve in
    # tab:blue over the ground truth shaded tab:red at alpha 0.25 (measured: 922 and 80595 pixels)
    rgb = (mpimg.imread(demo_run / "eval_amsrc" / "score_curves.png")[..., :3] * 255).round().astype(int)
    assert rgb.shape == (230, 4 * 320, 3)

    def count(colour):
        return int((np.abs(rgb - np.array(colour)).max(-1) <= 12).sum())

    assert count((31, 119, 180)) > 400 and count((245, 201, 201)) > 20_000
    maps = mpimg.imread(demo_run / "eval_amsrc" / "error_maps.png")
    assert maps.shape[1] == 660 and maps.shape[0] > 210  # 6.6 in wide, a 2.1 in row per object shown


def test_evaluation_reports_cues_baselines_and_the_paper_protocol(demo_run):
    """results.json holds every scorer under every protocol; the velocity row equals a direct
    computation from the cube store with scikit-learn."""
    from sklearn.metrics import roc_auc_score

    from amsrc.prepare.store import CubeStore

    res = json.loads((demo_run / "eval_amsrc" / "results.json").read_text())
    assert list(res["baselines"]) == ["velocity", "velocity-gmm", "copy-last"]
    assert set(res["cues"]) == {"S_f", "S_p", "S_m"}  # the model keeps a memory (S_m), though the preset weighs it 0
    for m in [res, *res["baselines"].values(), *res["cues"].values()]:
        for proto in ("raw", "smoothed", "paper"):
            assert 0.5 < m[proto]["micro"] <= 1.0, (proto, m[proto])
        assert 0.5 < m["object"] <= 1.0  # the synthetic scene has pixel masks: object labels exist
    assert res["paper"]["n_frames"] == res["raw"]["n_frames"] - 4 * len(res["clips"])
    store = CubeStore.open(demo_run / "cubes")

    def speed(c):
        return np.abs(np.asarray(c.flow[:, -1], np.float32)).sum(-1).reshape(len(c.flow), -1).mean(1)

    empty = min(speed(store.load("training", n)).min() for n in store.clips("training"))
    scores, labels = [], []
    for n in store.clips("testing"):
        c = store.load("testing", n)
        v = speed(c)
        scores += [v[a:b].max() if b > a else empty for a, b in zip(c.offsets[:-1], c.offsets[1:])]
        labels += c.labels.tolist()
    assert res["baselines"]["velocity"]["raw"]["micro"] == pytest.approx(roc_auc_score(labels, scores), abs=1e-9)


def test_evaluate_command_reproduces_demo(demo_run, tmp_path, capsys):
    """`amsrc evaluate` on the saved model gives the numbers the demo printed."""
    code = main(["evaluate", str(demo_run / "train_amsrc" / "model.pt"), str(demo_run / "cubes"),
                 "--out", str(tmp_path)])
    assert code == 0
    a = json.loads((demo_run / "eval_amsrc" / "results.json").read_text())
    b = json.loads((tmp_path / "results.json").read_text())
    assert a["raw"]["micro"] == pytest.approx(b["raw"]["micro"], abs=1e-9)
    assert a["baselines"]["copy-last"]["paper"] == b["baselines"]["copy-last"]["paper"]
    out = capsys.readouterr().out
    assert "micro  smoothed   paper" in out and "velocity-gmm" in out and "z(S_p) alone" in out


def test_estimator_save_load_roundtrip(demo_run, tmp_path):
    from amsrc import AMSRC
    from amsrc.prepare.store import CubeStore

    det = AMSRC.load(demo_run / "train_amsrc" / "model.pt")
    store = CubeStore.open(demo_run / "cubes")
    det.save(tmp_path / "copy.pt")
    again = AMSRC.load(tmp_path / "copy.pt")
    a = det.score_store(store)[0]
    b = again.score_store(store)[0]
    np.testing.assert_array_equal(a.frame_raw, b.frame_raw)
    assert a.frame_raw.shape == (store.load("testing", a.name).n_frames,)


def test_unfitted_estimator_is_refused():
    from amsrc import AMSRC
    from amsrc.errors import ConfigError

    with pytest.raises(ConfigError, match="not fitted"):
        AMSRC().score_cubes(np.zeros((0, 5, 32, 32, 1), np.uint8), np.zeros((0, 4, 32, 32, 2), np.float16))


@pytest.mark.skipif(not PED2.is_dir(), reason="../shared/data/ped2 not present")
def test_ped2_subset_smoke(tmp_path):
    """Real data through the whole pipeline: 2 training clips, 2 test clips, 1 epoch."""
    from amsrc.data.index import DatasetIndex
    from amsrc.data.layouts import load_dataset
    from amsrc.eval.pipeline import run_pipeline

    full = load_dataset(PED2)
    sub = DatasetIndex(full.root, full.layout,
                       {"training": full.clips("training")[:2], "testing": full.clips("testing")[:2]})
    res = run_pipeline(sub, "ped2", tmp_path, epochs=1, progress=False, log=lambda *_: None)
    clips = res["clips"]
    assert list(clips) == ["01", "02"]
    # exact frame counts and labels of Ped2 test clips 01 (61-180 anomalous) and 02 (95-180)
    assert [c["frames"] for c in clips.values()] == [180, 180]
    assert [c["anomalous"] for c in clips.values()] == [120, 86]
    assert res["raw"]["n_frames"] == 360
    for c in clips.values():
        assert len(c["scores_raw"]) == c["frames"] and np.all(np.isfinite(c["scores_raw"]))
        assert c["objects"] > 0
    # the reported AUROC is scikit-learn's over the concatenated frames, and the paper protocol drops
    # the first 4 frames of each clip
    from sklearn.metrics import roc_auc_score

    y = np.concatenate([c["labels"] for c in clips.values()])
    s = np.concatenate([c["scores_raw"] for c in clips.values()])
    assert res["raw"]["micro"] == pytest.approx(roc_auc_score(y, s), abs=1e-9)
    assert res["paper"]["n_frames"] == 360 - 2 * 4
