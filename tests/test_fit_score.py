"""`amsrc fit` on normal footage and `amsrc score` on a clip with an inserted event.

Scene (generated here, 96x128 grey): a fixed textured background, three textured walkers at ~2
px/frame, sensor noise; the test clip adds a large bright square crossing at 7 px/frame in
frames EVENT = [70, 92). The model is fitted once (tiny widths, 5 epochs, one torch thread).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

H, W = 96, 128
N_TRAIN, N_TEST = 200, 160
EVENT = (70, 92)


def scene(n: int, seed: int, event: tuple[int, int] | None = None) -> np.ndarray:
    """(n, H, W, 3) uint8 frames."""
    import cv2

    rng = np.random.default_rng(seed)
    bg = cv2.GaussianBlur(np.random.default_rng(99).uniform(60, 160, (H, W)).astype(np.float32), (0, 0), 3)
    tex = np.random.default_rng(7).uniform(10, 70, (18, 8)).astype(np.float32)
    walkers = [(20 + 25 * k, rng.uniform(0, W), (1 if k % 2 == 0 else -1) * rng.uniform(1.6, 2.2)) for k in range(3)]
    out = np.empty((n, H, W, 3), np.uint8)
    for t in range(n):
        f = bg.copy()
        for row, x0, v in walkers:
            x = int((x0 + v * t) % (W + 12)) - 12
            part = tex[:, max(0, -x):max(0, min(8, W - x))]
            f[row:row + 18, max(x, 0):max(x, 0) + part.shape[1]] = part
        if event and event[0] <= t < event[1]:
            x = int(-20 + 7 * (t - event[0]))
            f[60:84, max(x, 0):max(x + 24, 0)] = 240.0
        f = f + rng.normal(0, 2, f.shape)
        out[t] = np.repeat(np.clip(f, 0, 255).astype(np.uint8)[..., None], 3, axis=2)
    return out


def write_folder(frames: np.ndarray, d: Path) -> Path:
    import cv2

    d.mkdir(parents=True, exist_ok=True)
    for i, f in enumerate(frames):
        cv2.imwrite(str(d / f"{i:04d}.png"), np.ascontiguousarray(f[..., ::-1]))
    return d


def read_lines(path: Path, kind: str | None = None) -> list[dict]:
    """The JSON lines of a file (those of ``type`` ``kind`` only, when given)."""
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in lines if kind is None or r["type"] == kind]


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    import torch

    from amsrc.cli import main

    torch.set_num_threads(1)
    d = tmp_path_factory.mktemp("fitscore")
    train = write_folder(scene(N_TRAIN, 0), d / "train")
    test_frames = scene(N_TEST, 1, EVENT)
    test = write_folder(test_frames, d / "test")
    model = d / "model.pt"
    rc = main(["fit", str(train), "--out", str(model), "--widths", "tiny", "--epochs", "5", "--no-progress",
               "--threads", "1"])
    assert rc == 0 and model.is_file()
    return {"dir": d, "train": train, "test": test, "model": model, "frames": test_frames}


def test_fit_stores_threshold_size_and_speeds(fitted):
    from amsrc.detector import AMSRC

    fm = AMSRC.load(fitted["model"])
    assert fm.footage_.frame_size == (H, W)
    assert fm.threshold_.value is not None and np.isfinite(fm.threshold_.value)
    assert fm.threshold_.low <= fm.threshold_.value
    assert "99.5th percentile" in fm.threshold_.rule
    assert fm.preset_.score.causal is True
    # walkers move ~2 px/frame: the training speed median is about that
    med = float(np.interp(50, fm.footage_.speed_stats.levels, fm.footage_.speed_stats.values))
    assert 1.0 < med < 3.5


def test_event_alerted_normal_stretches_not(fitted, capsys):
    from amsrc.cli import main

    out, ev = fitted["dir"] / "scores.jsonl", fitted["dir"] / "events.jsonl"
    assert main(["score", str(fitted["model"]), str(fitted["test"]), "--jsonl", str(out), "--events", str(ev)]) == 0
    head, *frames = read_lines(out)
    assert head["type"] == "header" and "numbered from 0" in head["frame"] and "25 fps (assumed)" in head["time"]
    assert "standard deviations of normal training objects" in head["score"]
    assert [r["frame"] for r in frames] == list(range(N_TEST))
    events = read_lines(ev)
    ends = [e for e in events if e["type"] == "event_end"]
    starts = [e for e in events if e["type"] == "event_start"]
    assert len(starts) == len(ends) == 1  # the inserted event, and nothing in the 70 + 60 normal frames
    e = ends[0]
    assert e["start_frame"] < EVENT[1] and e["end_frame"] >= EVENT[0]
    assert EVENT[0] <= e["peak_frame"] < EVENT[1] + 5
    # alert latency: the start line comes within 1 s (25 frames) of the event's first frame
    assert starts[0]["alert_frame"] - EVENT[0] <= 25
    ex = e["explanation"]
    assert {"z_s_f", "z_s_p", "speed_px_per_frame", "speed_percentile"} <= set(ex)
    # the reported cue is the largest of its own z values (events.explain: motion = z(S_f),
    # appearance = z(S_p), speed = the robust z of the object's speed against the training speeds);
    # measured: z_s_f -0.76, z_s_p 84.1, z_speed 9.67 -> "appearance"
    z = {"motion": ex["z_s_f"], "appearance": ex["z_s_p"], "speed": ex["z_speed"]}
    assert ex["cue"] == max(z, key=z.get), ex
    # the square (7 px/frame) is faster than every training walker (~2 px/frame): measured speed
    # 6.84 px/frame, percentile 100.0 (above the training maximum), training p99 3.00, z_speed 9.67
    assert ex["speed_percentile"] >= 99.0, ex
    assert ex["speed_px_per_frame"] > 1.5 * ex["train_speed_p99"], ex
    assert ex["z_speed"] > 4.0, ex
    # the peak box lies on the square (rows 60..84)
    x0, y0, x1, y1 = e["boxes"][0]["box"]
    assert y0 < 84 and y1 > 60
    assert all(r["anomalous"] for r in frames[EVENT[0] + 5:EVENT[1]])
    assert not any(r["anomalous"] for r in frames[:EVENT[0]])
    err = capsys.readouterr().err
    assert "alert: event 1 started" in err and "frames/s end to end" in err


def test_stream_scorer_equals_prepared_store(fitted, tmp_path):
    from amsrc.data.index import DatasetIndex
    from amsrc.data.layouts import frame_folder_clip
    from amsrc.detector import AMSRC
    from amsrc.live.stream import StreamScorer
    from amsrc.prepare.run import prepare_dataset
    from amsrc.prepare.store import CubeStore

    fm = AMSRC.load(fitted["model"])
    clip = frame_folder_clip(fitted["test"], "testing", name="test")
    idx = DatasetIndex(root=fitted["test"], layout="folder", splits={"testing": (clip,)})
    prepare_dataset(idx, fm.preset_.prepare, tmp_path / "cubes", progress=False)
    cs = fm.score_clip(CubeStore.open(tmp_path / "cubes").load("testing", "test"))
    sc = StreamScorer(fm, fm.threshold_.value, fm.footage_.frame_size)
    res = [sc.push(f) for f in fitted["frames"]]
    np.testing.assert_allclose([r.raw for r in res], cs.frame_raw, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose([r.score for r in res], cs.frame, rtol=1e-5, atol=1e-5)
    assert sum(len(r.boxes) for r in res) == len(cs.objects)


def test_piped_stdin_gives_the_file_scores(fitted, tmp_path):
    from amsrc.cli import main

    out_file = tmp_path / "scores.jsonl"  # the reference: the same frames scored from the folder
    assert main(["score", str(fitted["model"]), str(fitted["test"]), "--jsonl", str(out_file)]) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    p = subprocess.run([sys.executable, "-m", "amsrc.cli", "score", str(fitted["model"]), "-", "--stdin-size",
                        f"{W}x{H}"], input=fitted["frames"].tobytes(), capture_output=True, env=env, timeout=120)
    assert p.returncode == 0, p.stderr.decode()
    piped = [json.loads(line) for line in p.stdout.decode().splitlines()]
    pf = [r for r in piped if r["type"] == "frame"]
    ff = [r for r in read_lines(out_file) if r["type"] == "frame"]
    assert [r["frame"] for r in pf] == [r["frame"] for r in ff] == list(range(N_TEST))
    assert [r["raw"] for r in pf] == [r["raw"] for r in ff]
    assert [r["score"] for r in pf] == [r["score"] for r in ff]
    assert [r["type"] for r in piped].count("event_start") == 1  # events interleaved on stdout


def test_resolution_mismatch_rescaled_or_refused(fitted, tmp_path, capsys):
    import cv2

    from amsrc.cli import main

    big = np.stack([cv2.resize(f, (2 * W, 2 * H), interpolation=cv2.INTER_LINEAR) for f in fitted["frames"][60:90]])
    src = write_folder(big, tmp_path / "big")
    out = tmp_path / "s.csv"
    assert main(["score", str(fitted["model"]), str(src), "--csv", str(out)]) == 0
    err = capsys.readouterr().err
    assert f"frames are {2 * W}x{2 * H} but the model was fitted on {W}x{H}" in err
    rows = out.read_text().splitlines()
    assert rows[0].startswith("# source: ") and "frames are numbered from 0" in rows[0]
    assert rows[1].startswith("frame,time,raw,score") and len(rows) == 2 + 30
    boxes = [list(map(int, r.split(",")[6:10])) for r in rows[2:] if r.split(",")[6]]
    assert boxes and max(b[2] for b in boxes) > W  # boxes are in the source's pixels
    assert main(["score", str(fitted["model"]), str(src), "--strict-size"]) == 2
    assert "--strict-size" in capsys.readouterr().err


def test_corrupt_frame_refused_or_skipped(fitted, tmp_path, capsys):
    """--on-corrupt error (the default): exit 2 naming the frame file, no output; warn: skipped, scoring goes on."""
    from amsrc.cli import main

    src = write_folder(fitted["frames"][:30], tmp_path / "c")
    (src / "0010.png").write_bytes(b"not a png at all")
    out = tmp_path / "s.jsonl"
    assert main(["score", str(fitted["model"]), str(src), "--jsonl", str(out)]) == 2
    assert f"{src / '0010.png'}: unreadable image" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c"]  # nothing half-written
    assert main(["score", str(fitted["model"]), str(src), "--jsonl", str(out), "--on-corrupt", "warn"]) == 0
    frames = [r["frame"] for r in read_lines(out) if r["type"] == "frame"]
    assert frames == [i for i in range(30) if i != 10]
    err = capsys.readouterr().err
    assert "skipping frame 10" in err and "1 corrupt frame(s) skipped" in err


# ---------------------------------------------------------------- small pieces (no model)
def test_parse_range():
    from amsrc.errors import ConfigError
    from amsrc.live.fit import parse_range

    assert parse_range("0:60s").frames(25) == (0, 1500)
    assert parse_range("100:900").frames(10) == (100, 900)
    assert parse_range("10s:").frames(30) == (300, None)
    for bad in ("5:5", "abc", "1.5:3"):
        with pytest.raises(ConfigError):
            parse_range(bad)


def test_auto_preset_scales_boxes_like_the_named_presets():
    from amsrc.config import get_preset
    from amsrc.live.fit import auto_preset

    for h, name in ((360, "avenue"), (480, "shanghaitech"), (240, "default")):
        p, notes = auto_preset(h, 640, 30.0)
        ref = get_preset(name).prepare.boxes
        b = p.prepare.boxes
        assert (b.close_w, b.close_h, b.min_area, b.margin) == (ref.close_w, ref.close_h, ref.min_area, ref.margin)
        assert p.score.causal and p.score.gaussian_sigma == pytest.approx(3.6)
        assert any("H/240" in n for n in notes)
        assert p.prepare.scale == 1.0
    # large frames are prepared at 360 rows, with the box settings of 360 rows and the small widths
    for h, w in ((720, 1280), (1080, 1920)):
        p, notes = auto_preset(h, w, 25.0)
        ref = get_preset("avenue").prepare.boxes
        b = p.prepare.boxes
        assert p.prepare.scale == pytest.approx(360 / h, abs=1e-6)
        assert (b.close_w, b.close_h, b.min_area, b.margin) == (ref.close_w, ref.close_h, ref.min_area, ref.margin)
        assert p.model.widths == (16, 32, 64, 128) and p.prepare.flow.dis_preset == "ultrafast"
        assert any("prepared at 360 rows" in n for n in notes)


def test_video_range_becomes_a_frame_folder(tmp_path):
    from amsrc.live.fit import build_footage, parse_range
    from helpers_video import write_video

    path = write_video(tmp_path / "v.mkv", np.stack([np.full((24, 32, 3), 20 * i, np.uint8) for i in range(12)]),
                       codec="ffv1", fps=10)
    foot = build_footage([path], tmp_path / "work", parse_range("0.2s:0.6s"))
    (clip,) = foot.index.clips("training")
    assert clip.n_frames == 4 and clip.frame_files is not None and foot.size == (24, 32)
    from amsrc.data.readers import read_image

    assert abs(int(read_image(clip.frame_files[0]).mean()) - 40) <= 2  # frame 2 of the video


def _fr(score: float):
    from amsrc.live.stream import FrameResult

    z = np.zeros(0)
    return FrameResult(0, score, score, None, np.zeros((0, 4), np.int32), z, z, z, z, 0.0)


def test_event_detector_hysteresis():
    from amsrc.live.events import EventDetector

    scores = [0] * 10 + [5, 5] + [0] * 5 + [5] * 6 + [0.6, 0.6, 0] + [0] * 10
    det = EventDetector(threshold=1.0, threshold_low=0.5, min_frames=3, end_frames=5)
    lines = []
    for i, s in enumerate(scores):
        lines += [(i, e) for e in det.push(i, i / 25, _fr(s))]
    lines += [(len(scores), e) for e in det.close(len(scores) - 1, 0.0)]
    # the 2-frame spike at 10-11 is no event; 17..22 is, plus 23-24 above the low threshold
    assert [(i, e["type"]) for i, e in lines] == [(19, "event_start"), (29, "event_end")]
    s, e = lines[0][1], lines[1][1]
    assert s["start_frame"] == 17 and s["delay_frames"] == 2
    assert (e["start_frame"], e["end_frame"], e["peak_frame"]) == (17, 24, 17)


def test_overlay_and_report_agree_with_the_events_frame_by_frame(fitted, tmp_path, capsys):
    """The overlay shows the EVENT banner exactly from an event's alert frame until its end line, the
    top object's box red then, the score bar in the colour of the frame's score against both
    thresholds; the report has one row and one picture per event with its frames and times."""
    import av

    from amsrc.cli import main
    from amsrc.detector import AMSRC
    from amsrc.live.overlay import bar_colour, bar_scale

    ov, rep, sj, ev = tmp_path / "o.mp4", tmp_path / "r.html", tmp_path / "s.jsonl", tmp_path / "e.jsonl"
    assert main(["score", str(fitted["model"]), str(fitted["test"]), "--jsonl", str(sj), "--events", str(ev),
                 "--overlay", str(ov), "--report", str(rep), "--fps", "10"]) == 0
    thr = AMSRC.load(fitted["model"]).threshold_
    frames = read_lines(sj, "frame")
    starts, ends = read_lines(ev, "event_start"), read_lines(ev, "event_end")
    assert len(starts) == len(ends) >= 1
    open_at = {f for s, e in zip(starts, ends) for f in range(s["alert_frame"], e["emitted_frame"])}
    with av.open(str(ov)) as c:
        video = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert len(video) == len(frames) == N_TEST
    classes = {(230, 25, 25): "red", (255, 150, 0): "orange", (0, 200, 0): "green"}

    def colour(px) -> str:
        return min(classes.items(), key=lambda kv: np.abs(np.asarray(kv[0]) - px).sum())[1]

    lo, hi = bar_scale(thr.value, thr.low)
    checked = 0
    for rec, img in zip(frames, video):
        t = rec["frame"]
        banner = img[-5:, 50:].reshape(-1, 3).astype(int).mean(0)
        assert (banner[0] > 180 and banner[1] < 80 and banner[2] < 80) == (t in open_at), (t, banner)
        if t in open_at and rec["top_box"] is not None:  # the object the event is about: a red box
            x0, y0, x1, y1 = rec["top_box"]
            ring = np.concatenate([img[y0:y1, x0], img[y0:y1, x1 - 1], img[y0, x0:x1], img[y1 - 1, x0:x1]]).astype(int)
            red = [colour(px) == "red" for px in ring if px.sum() > 150]  # labels' black backgrounds may cover parts
            assert np.mean(red) > 0.6, (t, np.mean(red))
        # the bar's first pixels, where it is filled, have the colour of the score against both thresholds
        if rec["score"] > lo + 0.25 * (hi - lo):  # filled well past the pixels looked at
            px = np.median(img[20:26, 70:73].reshape(-1, 3).astype(int), 0)
            assert colour(px) == classes[bar_colour(rec["score"], thr.value, thr.low)], (t, rec["score"], px)
            checked += 1
    assert checked >= 20
    # the report: a row per event (start and end as frame and time at 10 fps), a picture per event, linked
    html = rep.read_text()
    for e in ends:
        n = e["event"]
        assert f'<tr class="event-row" id="event-{n}">' in html and f'id="thumb-{n}"' in html
        assert f"frame {e['start_frame']} · {e['start_frame'] / 10:.2f} s" in html
        assert f"frame {e['end_frame']} · {e['end_frame'] / 10:.2f} s" in html
    assert html.count('<img alt="event ') == len(ends) and "ground truth" not in html
    assert f"threshold {thr.value:.4g}" in html and "10 fps (from --fps)" in html
    err = capsys.readouterr().err
    assert f"overlay video: {ov}" in err and f"report: {rep}" in err


def test_threshold_is_set_on_held_out_footage_with_its_false_alarm_rate(fitted):

    from amsrc.detector import AMSRC

    fm = AMSRC.load(fitted["model"])
    assert "last 20% of every clip (not trained on)" in fm.threshold_.rule
    fa = fm.threshold_.false_alarms_per_hour
    assert np.isfinite(fa) and fa >= 0
    # the model trained on the first 160 frames only: its training log counts their cubes
    work = fitted["model"].with_name("model_work")
    from amsrc.prepare.store import CubeStore

    store = CubeStore.open(work / "cubes")
    assert [store.load(s, n).n_frames for s in ("training", "holdout") for n in store.clips(s)] == [160, 40]


def test_hold_out_named_clips_and_refusals(tmp_path):
    from amsrc.data.index import Clip, DatasetIndex
    from amsrc.errors import ConfigError
    from amsrc.live.fit import Footage, hold_out

    clips = tuple(Clip(n, "training", tmp_path / n, 50, tuple(tmp_path / n / f"{i}.png" for i in range(50)))
                  for n in ("a", "b", "c"))
    foot = Footage(DatasetIndex(tmp_path, "fit", {"training": clips}), (H, W), None)
    idx, desc = hold_out(foot, tmp_path, ["b"])
    assert [c.name for c in idx.clips("training")] == ["a", "c"] and [c.name for c in idx.clips("holdout")] == ["b"]
    assert desc == "held-out clip(s) b"
    idx, _ = hold_out(foot, tmp_path)
    assert [c.n_frames for c in idx.clips("training")] == [40] * 3 and [c.n_frames for c in idx.clips("holdout")] == [10] * 3
    assert idx.clips("holdout")[0].frame_files[0].name == "40.png"
    with pytest.raises(ConfigError, match="no clip named z"):
        hold_out(foot, tmp_path, ["z"])
    with pytest.raises(ConfigError, match="none is left to train on"):
        hold_out(foot, tmp_path, ["a", "b", "c"])
    short = Footage(DatasetIndex(tmp_path, "fit", {"training": (Clip("s", "training", tmp_path, 30, None),)}), (H, W), None)
    with pytest.raises(ConfigError, match="too short to hold out"):
        hold_out(short, tmp_path)


def test_validation_counts_alerted_events_and_time_to_alert(fitted, tmp_path):
    from amsrc.data.groundtruth import write_mat_intervals
    from amsrc.detector import AMSRC
    from amsrc.live.fit import Threshold, format_validation, validate_alerts

    root = tmp_path / "val"
    write_folder(scene(40, 3), root / "training" / "frames" / "01")
    write_folder(fitted["frames"], root / "testing" / "frames" / "01")
    write_mat_intervals(root / "val.mat", [[(EVENT[0] + 1, EVENT[1])]], "test")
    fm = AMSRC.load(fitted["model"])
    thr = Threshold(fm.threshold_.value, fm.threshold_.low, "", 1, 0.0, 0, 1.0, 25.0, False)
    v = validate_alerts(fm, thr, root, tmp_path / "work")
    assert v["events"] == 1 and v["detected"] == 1 and v["detection_rate"] == 1.0
    assert 0 <= v["median_delay_s"] <= 1.0 and v["false_alarms"] == 0
    assert v["normal_s"] == pytest.approx((N_TEST - (EVENT[1] - EVENT[0])) / 25.0)
    assert "1 of 1 injected events alerted (100%)" in format_validation(v)


def test_python_api_scores_a_video_as_the_cli_does(fitted, tmp_path):
    """``AMSRC.score_video`` returns the CLI's per-frame scores and events as arrays and dataclasses;
    ``score_samples`` / ``decision_function`` / ``predict`` on cubes are the object scores against the
    threshold (higher = more anomalous)."""
    from amsrc.cli import main
    from amsrc.detector import AMSRC
    from amsrc.errors import ConfigError
    from amsrc.live.stream import StreamScorer

    det = AMSRC.load(fitted["model"])
    vs = det.score_video(fitted["test"], fps=10)
    out, ev = tmp_path / "s.jsonl", tmp_path / "e.jsonl"
    assert main(["score", str(fitted["model"]), str(fitted["test"]), "--jsonl", str(out), "--events", str(ev),
                 "--fps", "10"]) == 0
    frames, ends = read_lines(out, "frame"), read_lines(ev, "event_end")
    assert vs.frame.tolist() == [r["frame"] for r in frames] == list(range(N_TEST))
    np.testing.assert_allclose(vs.time, np.arange(N_TEST) / 10.0)
    np.testing.assert_allclose(vs.score, [r["score"] for r in frames], rtol=0, atol=1e-9)
    np.testing.assert_allclose(vs.raw, [r["raw"] for r in frames], rtol=0, atol=1e-9)
    assert vs.anomalous.tolist() == [r["anomalous"] for r in frames]
    assert (vs.fps, vs.fps_origin, vs.threshold) == (10.0, "--fps", det.threshold_.value)
    assert [(e.start_frame, e.end_frame, e.peak_frame) for e in vs.events] == \
        [(e["start_frame"], e["end_frame"], e["peak_frame"]) for e in ends]
    assert all(e.cue in ("motion", "appearance", "speed") and "normal objects" in e.why for e in vs.events)

    scorer = StreamScorer(det, det.threshold_.value, det.footage_.frame_size)
    r = max((scorer.push(f) for f in fitted["frames"][:90]), key=lambda r: r.raw)
    s = det.score_samples(r.cubes.appearance, r.cubes.flow)
    np.testing.assert_allclose(s, r.object_scores, rtol=0, atol=1e-4)
    np.testing.assert_allclose(det.decision_function(r.cubes.appearance, r.cubes.flow), s - det.threshold_.value,
                               rtol=0, atol=1e-9)
    assert det.predict(r.cubes.appearance, r.cubes.flow).tolist() == (s >= det.threshold_.value).astype(int).tolist()
    assert det.predict(r.cubes.appearance, r.cubes.flow).max() == 1  # the square is above the threshold
    det.threshold_ = None
    with pytest.raises(ConfigError, match="no decision threshold"):
        det.decision_function(r.cubes.appearance, r.cubes.flow)


def test_score_engine_onnxruntime_gives_the_torch_lines(fitted, tmp_path):
    from amsrc.cli import main
    from amsrc.detector import AMSRC

    out = {}
    for engine in ("torch", "onnxruntime"):
        out[engine] = tmp_path / f"{engine}.jsonl"
        assert main(["score", str(fitted["model"]), str(fitted["test"]), "--jsonl", str(out[engine]),
                     "--engine", engine]) == 0
    a, b = read_lines(out["torch"], "frame"), read_lines(out["onnxruntime"], "frame")
    assert len(a) == len(b) == N_TEST
    diff = max(abs(x["raw"] - y["raw"]) for x, y in zip(a, b))
    assert diff <= AMSRC.ENGINE_TOLERANCE, diff
    assert [x["anomalous"] for x in a] == [y["anomalous"] for y in b]


def test_score_video_stopped_by_ctrl_c_returns_what_was_scored(fitted, monkeypatch):
    from amsrc.detector import AMSRC
    from helpers_model import ctrl_c_at_frame

    ctrl_c_at_frame(monkeypatch, 8)
    vs = AMSRC.load(fitted["model"]).score_video(fitted["test"])
    assert vs.summary.interrupted and vs.frame.tolist() == list(range(7)) and vs.score.shape == (7,)
