"""The whole job: prepare -> train -> evaluate, as one call (``amsrc run`` and ``amsrc demo``)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from amsrc.config import PREPARE_SECTIONS, apply_overrides, get_preset
from amsrc.detector import AMSRC
from amsrc.eval.evaluate import evaluate
from amsrc.prepare.run import prepare_dataset
from amsrc.prepare.store import CubeStore


def run_pipeline(root, preset_name: str, out: str | Path, variant: str | None = None,
                 epochs: int | None = None, workers: int = 1, device: str = "cpu",
                 progress: bool = True, resume: bool = True, log=print,
                 overrides: list[str] | tuple[str, ...] = (), name: str | None = None) -> dict[str, Any]:
    """Prepare the cubes of ``root`` (a path or a DatasetIndex), train on its training split, evaluate on its test split.

    ``overrides``: ``SECTION.KEY=VALUE`` settings; ``boxes.*``, ``flow.*`` and ``prepare.*`` ones change the
    cubes (and the store's settings), the others the model.

    Layout of ``out``: ``cubes/`` (the cube store, reused when its settings and sources match),
    ``train_<name>/`` (log, checkpoints, ``model.pt``), ``eval_<name>/`` (results and plots); ``name``
    defaults to the variant, another one lets several trainings share one store.
    An interrupted run resumes: finished clips are not prepared again and training continues from
    the last epoch's checkpoint.
    """
    out = Path(out)
    # box, flow and cube settings (--set boxes.persist=2) make the store's preset; the rest the model's
    store_items = [o for o in overrides if str(o).partition(".")[0].strip() in PREPARE_SECTIONS]
    chosen = apply_overrides(get_preset(preset_name), store_items, allowed=PREPARE_SECTIONS) if store_items else preset_name
    det = AMSRC(preset=chosen, variant=variant, epochs=epochs, device=device, progress=progress,
                overrides=[o for o in overrides if o not in store_items])
    preset = det.resolved_preset()  # a bad --set fails here, before any work
    timings: dict[str, float] = {}

    t0 = time.perf_counter()
    report = prepare_dataset(root if hasattr(root, "splits") else Path(root), preset.prepare, out / "cubes", workers=workers,
                             progress=progress, preset_name=preset_name)
    timings["prepare_s"] = time.perf_counter() - t0
    log(report.format())
    store = CubeStore.open(out / "cubes")

    v = name or preset.model.variant
    t0 = time.perf_counter()
    det.fit(store, out / f"train_{v}", resume=resume)
    timings["train_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    result = evaluate(det, store, out / f"eval_{v}")
    timings["evaluate_s"] = time.perf_counter() - t0
    result["timings"] = timings
    log(format_result(result))
    return result


def _row(name: str, m: dict) -> str:
    obj = m.get("object")
    return (f"  {name:14s} {100 * m['raw']['micro']:6.1f} {100 * m['smoothed']['micro']:9.1f} "
            f"{100 * m['paper']['micro']:7.1f} {100 * m['raw']['macro']:7.1f} "
            f"{'   n/a' if obj is None else f'{100 * obj:6.1f}'}")


def format_result(result: dict[str, Any]) -> str:
    """A few lines for the terminal: micro AUROC of the model, its cues alone and the baselines,
    under every protocol, then the timings."""
    lines = [
        f"variant {result['variant']}  widths {result['widths']}  epochs {result['epochs']}  "
        f"weights w_f={result['weights']['w_f']} w_p={result['weights']['w_p']} w_m={result['weights'].get('w_m', 0.0)}",
        f"  AUROC x100     micro  smoothed   paper   macro  object   (smoothed: {result['smoothing']}; "
        f"paper: {result.get('paper_protocol', 'n/a')})",
        _row(result["variant"], result),
    ]
    for cue, m in result.get("cues", {}).items():
        lines.append(_row(f"  z({cue}) alone", m))
    for name, m in result.get("baselines", {}).items():
        lines.append(_row(name, m))
    r = result["raw"]
    lines.append(f"  {result['variant']}: raw EER {r['eer']:.4f}  AP {r['ap']:.4f}")
    if "timings" in result:
        t = result["timings"]
        lines.append("  time " + "  ".join(f"{k[:-2]} {v:.1f}s" for k, v in t.items()))
    return "\n".join(lines)
