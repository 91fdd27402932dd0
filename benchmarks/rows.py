"""One markdown table from several `amsrc evaluate` folders: the experiment rows of issue 13.

    python benchmarks/rows.py runs/ped2/val/eval_ref runs/ped2/val/eval_skips1 ...

Each row is one trained model, named by its folder (``eval_NAME`` beside ``train_NAME``, whose
train_log.csv gives the training time):
object-level and frame-level (micro, raw and Gaussian sigma 3) AUROC of the mix, of z(S_f) and
z(S_p) alone. The non-learned baselines of the first folder (the same store for every row) are
printed first, so a learned row that loses to them is seen to lose.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path


def _f(m: dict | None, key: str) -> str:
    if m is None:
        return "n/a"
    v = m.get("object") if key == "object" else m[key]["micro"]
    return "n/a" if v is None else f"{100 * v:.1f}"


def _train_info(eval_dir: Path) -> tuple[str, str]:
    """(settings changed from the preset, training seconds) from the train folder beside ``eval_dir``."""
    train = eval_dir.parent / eval_dir.name.replace("eval_", "train_", 1)
    secs = "n/a"
    log = train / "train_log.csv"
    if log.is_file():
        with open(log) as fh:
            secs = f"{sum(float(r['seconds']) for r in csv.DictReader(fh)):.0f}"
    return eval_dir.name.replace("eval_", "", 1), secs


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("evals", nargs="+", type=Path, help="folders written by `amsrc evaluate`")
    args = ap.parse_args(argv)
    results = [(d, json.loads((d / "results.json").read_text())) for d in args.evals]
    cols = ("object", "raw", "smoothed")
    print("| row | train s | " + " | ".join(f"mix {c}" for c in cols) + " | " + " | ".join(f"S_f {c}" for c in cols)
          + " | " + " | ".join(f"S_p {c}" for c in cols) + " |")
    print("|" + "---|" * (2 + 3 * len(cols)))
    for name, m in results[0][1].get("baselines", {}).items():
        print(f"| {name} (no learning) | - | " + " | ".join(_f(m, c) for c in cols) + " |" + " |" * (2 * len(cols)))
    for d, r in results:
        name, secs = _train_info(d)
        cues = r.get("cues", {})
        cells = [_f(r, c) for c in cols] + [_f(cues.get("S_f"), c) for c in cols] + [_f(cues.get("S_p"), c) for c in cols]
        print(f"| {name} | {secs} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
