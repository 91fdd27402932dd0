"""One scoring path: the same cubes give the same scores through every entry point, and one
checkpoint file carries everything a fitted model learned."""

from __future__ import annotations

import io
import json

import cv2
import numpy as np
import pytest
import torch

from amsrc.data.index import DatasetIndex
from amsrc.data.layouts import frame_folder_clip
from amsrc.data.sources import open_source
from amsrc.detector import AMSRC
from amsrc.errors import DataError
from amsrc.eval.evaluate import cue_clips
from amsrc.live.run import score_source
from amsrc.live.stream import StreamScorer
from amsrc.prepare.features import SpeedStats
from amsrc.prepare.run import prepare_dataset
from amsrc.prepare.store import CubeStore
from amsrc.scoring import zscore
from amsrc.training.checkpoint import FORMAT_VERSION, Checkpoint, FootageInfo, Threshold
from helpers_model import tiny_detector

H, W, N = 60, 80, 30
# Frame-by-frame scoring runs each frame's objects as one batch, the store as batches of 512:
# torch's CPU kernels round differently per batch size (see live/stream.py), hence a tolerance.
BATCH_ATOL = 1e-4


def _frames() -> list[np.ndarray]:
    rng = np.random.default_rng(1)
    bg = rng.integers(70, 110, (H, W), dtype=np.uint8).astype(np.int16)
    out = []
    for t in range(N):
        f = bg.copy()
        x = (4 + 3 * t) % (W - 12)
        f[18:38, x:x + 10] = 225
        f[40:52, (60 - 2 * t) % (W - 8):(60 - 2 * t) % (W - 8) + 6] = 20
        out.append(np.repeat(np.clip(f, 0, 255).astype(np.uint8)[..., None], 3, 2))
    return out


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("path")
    tiny = tiny_detector()
    ck = Checkpoint.of(tiny.model_, tiny.preset_, tiny.train_stats_, epoch=3,
                       threshold=Threshold(0.7, 0.4, "a test threshold", 1.5),
                       footage=FootageInfo((H, W), 10.0, SpeedStats.from_speeds(np.linspace(0, 4, 50))),
                       extras={"fit_sources": ["somewhere"]})
    ck.save(d / "model.pt")
    folder = d / "frames"
    folder.mkdir()
    frames = _frames()
    for i, f in enumerate(frames):
        cv2.imwrite(str(folder / f"{i:03d}.png"), cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    det = AMSRC.load(d / "model.pt")
    idx = DatasetIndex(root=folder, layout="folder", splits={"testing": (frame_folder_clip(folder, "testing", name="c"),)})
    prepare_dataset(idx, det.preset_.prepare, d / "cubes", progress=False)
    store = CubeStore.open(d / "cubes")
    return {"dir": d, "det": det, "store": store, "clip": store.load("testing", "c"), "frames": frames, "folder": folder}


def test_estimator_stream_loop_and_cue_rows_agree(setup):
    det, clip = setup["det"], setup["clip"]
    est = det.score_clip(clip)  # what evaluate, fit's threshold and the benchmarks score
    assert clip.n_cubes > N - 4 and np.diff(clip.offsets).max() >= 2  # frames with several objects
    # live scorer, frame by frame: same frame scores, same object scores in the same order
    scorer = StreamScorer(det)
    live = [scorer.push(f) for f in setup["frames"]]
    np.testing.assert_allclose([r.raw for r in live], est.frame_raw, rtol=0, atol=BATCH_ATOL)
    np.testing.assert_allclose([r.score for r in live], est.frame, rtol=0, atol=BATCH_ATOL)
    np.testing.assert_allclose(np.concatenate([r.object_scores for r in live]), est.objects, rtol=0, atol=BATCH_ATOL)
    assert all(r.raw == det.empty_score_ for r in live[:4])
    # the `amsrc score` loop on the frame folder writes exactly the live scorer's numbers
    out = io.StringIO()
    score_source(det, open_source(str(setup["folder"]), fps=10.0), out, warn=lambda m: None)
    lines = [json.loads(s) for s in out.getvalue().splitlines()]
    frames = [r for r in lines if r["type"] == "frame"]
    assert [r["raw"] for r in frames] == [r.raw for r in live]
    assert [r["score"] for r in frames] == [r.score for r in live]
    # the cue rows of evaluate are z(S_f), z(S_p) of the same objects, through the same frame max
    cues = cue_clips(det, [est])
    st = det.train_stats_
    np.testing.assert_allclose(cues["S_p"][0].objects, zscore(est.s_p, st.s_p_mean, st.s_p_std))
    np.testing.assert_allclose(cues["S_f"][0].objects, zscore(est.s_f, st.s_f_mean, st.s_f_std))
    k = clip.offsets
    t = int(np.argmax(np.diff(k)))
    assert cues["S_p"][0].frame_raw[t] == cues["S_p"][0].objects[k[t]:k[t + 1]].max()


def test_predictions_come_from_the_scoring_pass(setup):
    det, clip = setup["det"], setup["clip"]
    comb, s_f, s_p, _ = det.score_cubes(clip.appearance, clip.flow)
    pred = det.predict_cubes(clip.appearance, clip.flow)
    np.testing.assert_array_equal(pred.s_f, s_f)
    np.testing.assert_array_equal(pred.s_p, s_p)
    # S_p is the squared error of the returned prediction against the returned target
    np.testing.assert_allclose(((pred.pred - pred.target) ** 2).reshape(len(s_p), -1).sum(1), s_p, rtol=1e-5)


def test_onnx_check_on_stored_cubes(setup, tmp_path):
    pytest.importorskip("onnxruntime")
    from amsrc.export import check_onnx, export_onnx

    onnx = export_onnx(setup["dir"] / "model.pt", tmp_path / "m.onnx")
    clip = setup["clip"]
    res = check_onnx(onnx, setup["dir"] / "model.pt", clip.appearance, clip.flow, batch_sizes=(1, clip.n_cubes))
    assert res.ok, res.format()


def test_checkpoint_carries_threshold_footage_and_extras(setup, tmp_path):
    det = setup["det"]
    assert det.threshold_ == Threshold(0.7, 0.4, "a test threshold", 1.5)
    assert det.footage_.frame_size == (H, W) and det.footage_.fps == 10.0
    assert det.footage_.speed_stats.percentile(2.0) == pytest.approx(50.0, abs=1.5)
    assert det.extras_ == {"fit_sources": ["somewhere"]} and det.epoch_ == 3
    # save -> load keeps all of it, and the scores
    det.save(tmp_path / "again.pt")
    again = AMSRC.load(tmp_path / "again.pt")
    assert again.threshold_ == det.threshold_ and again.footage_.frame_size == det.footage_.frame_size
    np.testing.assert_array_equal(again.footage_.speed_stats.values, det.footage_.speed_stats.values)
    np.testing.assert_array_equal(again.score_clip(setup["clip"]).frame_raw, det.score_clip(setup["clip"]).frame_raw)
    state = torch.load(tmp_path / "again.pt", weights_only=True)
    assert state["format"] == "amsrc-model" and state["format_version"] == FORMAT_VERSION


def test_checkpoint_formats_old_and_new(setup, tmp_path):
    state = torch.load(setup["dir"] / "model.pt", weights_only=True)
    # format 1 (the first build): no format_version, what `fit` learned at the top level
    v1 = {k: state[k] for k in ("format", "model", "config", "train_stats", "version", "epoch")}
    v1.update(threshold=0.7, threshold_low=0.4, threshold_rule="old rule", frame_size=[H, W], fps=None,
              speed_stats=state["footage"]["speed_stats"], false_alarms_per_hour=2.0, fit_sources=["x"])
    torch.save(v1, tmp_path / "v1.pt")
    old = AMSRC.load(tmp_path / "v1.pt")
    assert old.threshold_ == Threshold(0.7, 0.4, "old rule", 2.0)
    assert old.footage_.frame_size == (H, W) and old.footage_.fps is None and old.extras_ == {"fit_sources": ["x"]}
    np.testing.assert_array_equal(old.score_clip(setup["clip"]).frame_raw,
                                  setup["det"].score_clip(setup["clip"]).frame_raw)
    # a model from `amsrc train` (format 1, nothing fitted): no threshold, no footage
    torch.save({k: state[k] for k in ("model", "config", "train_stats", "version")}, tmp_path / "plain.pt")
    plain = AMSRC.load(tmp_path / "plain.pt")
    assert plain.threshold_ is None and plain.footage_ is None
    # a newer format is refused with the way out
    torch.save({**state, "format_version": FORMAT_VERSION + 1}, tmp_path / "new.pt")
    with pytest.raises(DataError, match=rf"new.pt.*format {FORMAT_VERSION + 1}.*upgrade amsrc"):
        AMSRC.load(tmp_path / "new.pt")
    # a broken threshold is named
    torch.save({**state, "threshold": {"value": float("nan"), "low": 0.0}}, tmp_path / "nan.pt")
    with pytest.raises(DataError, match="threshold is not finite"):
        AMSRC.load(tmp_path / "nan.pt")


def test_background_travels_from_store_to_checkpoint_to_live(setup, tmp_path):
    """Box method "bg": the background a store learned is kept in the checkpoint, and the live scorer
    finds the same boxes with it as the store; a model without one is refused when scoring starts."""
    from amsrc.errors import ConfigError

    det = tiny_detector()
    det.preset_.prepare.boxes.method = "bg"
    det.background_ = np.median(np.stack([f[..., 0] for f in setup["frames"]]), axis=0).round().astype(np.uint8)
    det.save(tmp_path / "bg.pt")
    again = AMSRC.load(tmp_path / "bg.pt")
    assert again.background_.dtype == np.uint8 and np.array_equal(again.background_, det.background_)
    idx = DatasetIndex(root=setup["folder"], layout="folder",
                       splits={"testing": (frame_folder_clip(setup["folder"], "testing", name="c"),)})
    prepare_dataset(idx, again.preset_.prepare, tmp_path / "cubes", progress=False, background=again.background_)
    clip = CubeStore.open(tmp_path / "cubes").load("testing", "c")
    scorer = StreamScorer(again)
    live = [scorer.push(f) for f in setup["frames"]]
    assert np.array_equal(np.concatenate([r.boxes for r in live]), np.asarray(clip.boxes))
    np.testing.assert_allclose([r.raw for r in live], again.score_clip(clip).frame_raw, rtol=0, atol=BATCH_ATOL)
    # the two moving bars are found in every frame with cubes: one box each, or one when the closing joins them
    per_frame = np.diff(clip.offsets)[4:]
    assert set(per_frame.tolist()) <= {1, 2} and (per_frame == 2).sum() > (N - 4) // 2
    del det.background_
    det.save(tmp_path / "none.pt")
    with pytest.raises(ConfigError, match="needs the background"):
        StreamScorer(AMSRC.load(tmp_path / "none.pt"))


def test_border_slivers_left_out_of_the_frame_score_alike_offline_and_live(setup):
    """score.edge_min_side: objects cut by the frame border are scored and reported but the frame max
    skips them, in the one scoring path (store, live scorer, top object) alike."""
    import copy

    from amsrc.scoring import counted_objects

    det = copy.deepcopy(setup["det"])
    det.preset_.score.edge_min_side = 20
    clip = setup["clip"]
    assert clip.frame_size == (H, W)  # recorded by prepare
    counted = counted_objects(clip.boxes, (H, W), 20)
    assert (~counted).sum() >= 2 and counted.sum() >= 3  # the scene has slivers at the border and whole objects
    est = det.score_clip(clip)
    full = setup["det"].score_clip(clip)
    np.testing.assert_array_equal(est.objects, full.objects)  # every object still scored
    k = clip.offsets
    for t in range(clip.n_frames):
        keep = counted[k[t]:k[t + 1]]
        want = est.objects[k[t]:k[t + 1]][keep].max() if keep.any() else det.empty_score_
        assert est.frame_raw[t] == want
    scorer = StreamScorer(det)
    live = [scorer.push(f) for f in setup["frames"]]
    np.testing.assert_allclose([r.raw for r in live], est.frame_raw, rtol=0, atol=BATCH_ATOL)
    np.testing.assert_array_equal(np.concatenate([r.counted for r in live if len(r.boxes)]), counted)
    for r in live:  # the top object (events, outputs) is the one that set the frame score
        if r.top is not None:
            assert r.counted[r.top] and r.object_scores[r.top] == pytest.approx(r.raw)
    # the cue rows of evaluate use the same objects
    cues = cue_clips(det, [est])
    t = next(t for t in range(clip.n_frames) if not counted[k[t]:k[t + 1]].all() and counted[k[t]:k[t + 1]].any())
    assert cues["S_p"][0].frame_raw[t] == cues["S_p"][0].objects[k[t]:k[t + 1]][counted[k[t]:k[t + 1]]].max()


def test_frame_size_of_a_store_written_before_it_was_recorded(setup, tmp_path):
    """Old stores hold no frame size: it is read from the clip's source; a missing source is a DataError."""
    import dataclasses

    from amsrc.errors import DataError

    clip = dataclasses.replace(setup["clip"], frame_hw=None)
    assert clip.frame_size == (H, W)
    gone = dataclasses.replace(setup["clip"], frame_hw=None, source=str(tmp_path / "moved"))
    with pytest.raises(DataError, match="moved"):
        _ = gone.frame_size


def test_frames_batched_through_the_network_agree_with_frame_by_frame(setup):
    """StreamScorer.score_frames(batch=N) / score_source(batch=N): the objects of N frames in one network
    pass give the frame-by-frame scores within BATCH_TOLERANCE, in order, with the same boxes."""
    from amsrc.errors import ConfigError
    from amsrc.live.stream import BATCH_TOLERANCE

    det, frames = setup["det"], setup["frames"]
    one = StreamScorer(det)
    live = [one.push(f) for f in frames]
    for batch in (2, 7, 64):
        got = list(StreamScorer(det).score_frames(frames, batch=batch))
        assert [r.t for r in got] == list(range(len(frames)))
        np.testing.assert_allclose([r.raw for r in got], [r.raw for r in live], rtol=0, atol=BATCH_TOLERANCE)
        np.testing.assert_allclose([r.score for r in got], [r.score for r in live], rtol=0, atol=BATCH_TOLERANCE)
        np.testing.assert_allclose(np.concatenate([r.object_scores for r in got]),
                                   np.concatenate([r.object_scores for r in live]), rtol=0, atol=BATCH_TOLERANCE)
        assert all(np.array_equal(a.boxes, b.boxes) for a, b in zip(got, live))
    out = io.StringIO()
    score_source(det, open_source(str(setup["folder"]), fps=10.0), out, warn=lambda m: None, batch=5)
    raw = [json.loads(s)["raw"] for s in out.getvalue().splitlines() if json.loads(s)["type"] == "frame"]
    np.testing.assert_allclose(raw, [r.raw for r in live], rtol=0, atol=BATCH_TOLERANCE)
    with pytest.raises(ConfigError, match="batch"):
        list(StreamScorer(det).score_frames(frames, batch=0))
