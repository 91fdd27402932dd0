"""The whole job: prepare -> train -> evaluate, as one call (``amsrc run`` and ``amsrc demo``)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from amsrc.config import get_preset


def run_pipeline(root, preset_name: str, out: str | Path, variant: str | None = None,
                 epochs: int | None = None, workers: int = 1, device: str = "cpu",
                 progress: bool = True, resume: bool = True, log=print) -> dict[str, Any]:
    """Prepare the cubes of ``root`` (a path or a DatasetIndex), train on its training split, evaluate on its test split.

    Layout of ``out``: ``cubes/`` (the cube store, reused when its settings and sources match),
    ``train_<variant>/`` (log, checkpoints, ``model.pt``), ``eval_<variant>/`` (results and plots).
    An interrupted run resumes: finished clips are not prepared again and training continues from
    the last epoch's checkpoint.
    """
    from amsrc.detector import AMSRC
    from amsrc.evaluate import evaluate
    from amsrc.prepare.run import prepare_dataset
    from amsrc.prepare.store import CubeStore

    out = Path(out)
    preset = get_preset(preset_name)
    timings: dict[str, float] = {}

    t0 = time.perf_counter()
    report = prepare_dataset(root if hasattr(root, "splits") else Path(root), preset.prepare, out / "cubes", workers=workers,
                             progress=progress, preset_name=preset_name)
    timings["prepare_s"] = time.perf_counter() - t0
    log(report.format())
    store = CubeStore.open(out / "cubes")

    det = AMSRC(preset=preset_name, variant=variant, epochs=epochs, device=device, progress=progress)
    v = det._resolved_preset().model.variant
    t0 = time.perf_counter()
    det.fit(store, out / f"train_{v}", resume=resume)
    timings["train_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    result = evaluate(det, store, out / f"eval_{v}")
    timings["evaluate_s"] = time.perf_counter() - t0
    result["timings"] = timings
    log(format_result(result))
    return result


def format_result(result: dict[str, Any]) -> str:
    """A few lines for the terminal."""
    r, s = result["raw"], result["smoothed"]
    lines = [
        f"variant {result['variant']}  widths {result['widths']}  epochs {result['epochs']}  "
        f"weights w_f={result['weights']['w_f']} w_p={result['weights']['w_p']}",
        f"  raw       micro AUROC {r['micro']:.4f}  macro AUROC {r['macro']:.4f}  EER {r['eer']:.4f}  AP {r['ap']:.4f}",
        f"  smoothed  micro AUROC {s['micro']:.4f}  macro AUROC {s['macro']:.4f}  EER {s['eer']:.4f}  AP {s['ap']:.4f}"
        f"  ({result['smoothing']})",
    ]
    if "timings" in result:
        t = result["timings"]
        lines.append("  time " + "  ".join(f"{k[:-2]} {v:.1f}s" for k, v in t.items()))
    return "\n".join(lines)
