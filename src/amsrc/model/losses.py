"""Training losses of AMSRC-Net (DESIGN.md section 5).

    L = w_intensity * mean((x̂ - x)^2)
      + w_gradient  * gradient loss (Frame-Pred, alpha = 1)
      + w_consistency * mean_b(d(x_b, y_b))                (0 for the baseline: no motion stream)
      + weight_decay * sum of squared conv / linear weights (lambda_model ||W||^2; BN and biases excluded)

where d is the consistency distance of the model (:func:`consistency_distance`): 1 - cos (the paper)
or the mean squared difference of the standardised bottlenecks. The weight-decay term is part of
the loss (so Adam sees its gradient 2*lambda*W), unlike the official code whose L2 term is always 0.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from amsrc.config import TrainConfig


class LossTerms(NamedTuple):
    total: torch.Tensor  # () the weighted sum that is minimised
    intensity: torch.Tensor  # () mean squared error
    gradient: torch.Tensor  # () gradient loss
    consistency: torch.Tensor  # () mean consistency distance of x, y; 0 for the baseline
    weight_decay: torch.Tensor  # () sum of squared weights (NOT multiplied by lambda)


def intensity_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """mean((pred - target)^2) over all elements. pred, target (B, C, H, W)."""
    return F.mse_loss(pred, target)


def gradient_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Frame-Pred gradient loss with alpha = 1 (pred, target (B, C, H, W)):

    mean over (b, c, i, j) of | |p[i, j] - p[i-1, j]| - |t[i, j] - t[i-1, j]| |   (vertical, H-1 rows)
    + the same along the width                                                  (horizontal, W-1 columns)

    Differences are taken between neighbouring pixels inside the image (no padding).
    """
    pdy = (pred[..., 1:, :] - pred[..., :-1, :]).abs()
    tdy = (target[..., 1:, :] - target[..., :-1, :]).abs()
    pdx = (pred[..., :, 1:] - pred[..., :, :-1]).abs()
    tdx = (target[..., :, 1:] - target[..., :, :-1]).abs()
    return (pdy - tdy).abs().mean() + (pdx - tdx).abs().mean()


def cosine_distance(x: torch.Tensor, y: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """1 - cos(x_b, y_b) per row: x, y (B, D) -> (B,) (the object score S_f of a "cosine" model)."""
    return 1.0 - F.cosine_similarity(x.flatten(1), y.flatten(1), dim=1, eps=eps)


CONSISTENCY = ("cosine", "squared")  # ModelConfig.consistency


def consistency_distance(x: torch.Tensor, y: torch.Tensor, kind: str = "cosine") -> torch.Tensor:
    """The appearance-motion inconsistency per row, x, y (B, D) -> (B,); also the object score S_f.
    "cosine": 1 - cos(x_b, y_b), blind to a bottleneck's length (a motion feature grown twice as large
    for an object twice as fast leaves it unchanged); "squared": mean over D of (x_b - y_b)^2, for
    standardised bottlenecks (each feature of unit variance over normal objects), which sees it."""
    if kind == "cosine":
        return cosine_distance(x, y)
    if kind == "squared":
        return (x.flatten(1) - y.flatten(1)).pow(2).mean(1)
    raise ValueError(f"unknown consistency {kind!r}; expected one of {', '.join(CONSISTENCY)}")


def consistency_loss(x: torch.Tensor, y: torch.Tensor, kind: str = "cosine") -> torch.Tensor:
    """mean over the batch of :func:`consistency_distance`; x, y (B, D) flattened bottlenecks."""
    return consistency_distance(x, y, kind).mean()


def decay_weights(model: nn.Module) -> list[torch.Tensor]:
    """The weights lambda_model ||W||^2 acts on: those of every conv, transposed conv and linear layer."""
    kinds = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d, nn.Linear)
    return [m.weight for m in model.modules() if isinstance(m, kinds)]


def weight_decay_loss(weights: list[torch.Tensor]) -> torch.Tensor:
    """sum of squares of all ``weights`` (a differentiable scalar)."""
    if not weights:
        raise ValueError("no weights to decay")
    return torch.stack([w.pow(2).sum() for w in weights]).sum()


def amsrc_loss(out, target: torch.Tensor, cfg: TrainConfig, weights: list[torch.Tensor],
               consistency: str = "cosine") -> LossTerms:
    """All terms for one batch. ``out`` is a NetOutput (pred, x, y, m); target (B, C, S, S) frame t;
    ``weights`` from :func:`decay_weights` of the (unwrapped) model; ``consistency`` its
    ``ModelConfig.consistency``."""
    pred, x, y = out.pred, out.x, out.y
    li = intensity_loss(pred, target)
    lg = gradient_loss(pred, target)
    lc = consistency_loss(x, y, consistency) if y is not None else pred.new_zeros(())
    lw = weight_decay_loss(weights)
    total = cfg.w_intensity * li + cfg.w_gradient * lg + cfg.w_consistency * lc + cfg.weight_decay * lw
    return LossTerms(total, li, lg, lc, lw)
