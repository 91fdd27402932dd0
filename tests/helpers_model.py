"""A tiny untrained detector for scoring tests: no fitting, fixed weights and training statistics; and
Ctrl-C in the middle of a scoring run."""

from __future__ import annotations

import torch

from amsrc.config import ModelConfig, get_preset
from amsrc.detector import AMSRC
from amsrc.model.network import build_model
from amsrc.scoring import TrainStats


def tiny_detector() -> AMSRC:
    """Tiny widths, seed 0, both cues (w_f = w_p = 0.5), causal Gaussian smoothing (sigma 2), small
    boxes kept (min area 10); training statistics S_f 0.5 +- 0.2, S_p 30 +- 10."""
    torch.manual_seed(0)
    torch.set_num_threads(1)
    p = get_preset("default")
    p.model.widths = ModelConfig.WIDTH_PRESETS["tiny"]
    p.score.w_f, p.score.w_p = 0.5, 0.5
    p.score.smoothing, p.score.gaussian_sigma, p.score.causal = "gaussian", 2.0, True
    p.prepare.boxes.min_area = 10
    det = AMSRC(preset=p)
    det.model_ = build_model(p.model, p.prepare.channels, p.prepare.cube_size).eval()
    det.preset_ = p
    det.train_stats_ = TrainStats(0.5, 0.2, 30.0, 10.0)
    return det


def ctrl_c_at_frame(monkeypatch, n: int) -> None:
    """Make the ``n``-th frame a StreamScorer finishes raise KeyboardInterrupt (as Ctrl-C would), so
    ``n - 1`` frames are scored."""
    from amsrc.live import stream

    real, calls = stream.StreamScorer.finish_many, {"n": 0}

    def finish_many(self, preps):  # every path (push, finish, files) finishes frames here
        for _ in preps:
            calls["n"] += 1
            if calls["n"] == n:
                raise KeyboardInterrupt
        return real(self, preps)

    monkeypatch.setattr(stream.StreamScorer, "finish_many", finish_many)
