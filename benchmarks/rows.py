"""One markdown table from several `amsrc evaluate` folders: the experiment rows of issue 13.

    python benchmarks/rows.py runs/ped2/val/eval_ref runs/ped2/val/eval_skips1 ...

Each row is one trained model, named by its folder (``eval_NAME`` beside ``train_NAME``, whose
train_log.csv gives the training time):
object-level and frame-level (micro, raw and Gaussian sigma 3) AUROC of the mix, of z(S_f),
z(S_p) and z(S_m) alone ("n/a" where the model has no such cue). The non-learned baselines of the
first folder (the same store for every row) are printed first, so a learned row that loses to them
is seen to lose. ``--mean``: one model evaluated on several validation sets, as the mean over them.
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


def _mean(rs: list[dict]):
    """The mean of several results.json dicts, over the numbers rows.py prints (None if any is missing)."""
    def avg(ms: list[dict | None]) -> dict | None:
        if any(m is None for m in ms):
            return None
        obj = [m.get("object") for m in ms]
        out = {"object": None if None in obj else sum(obj) / len(obj)}
        for key in ("raw", "smoothed"):
            out[key] = {"micro": sum(m[key]["micro"] for m in ms) / len(ms)}
        return out

    first = rs[0]
    return {**avg(rs), "cues": {q: avg([r.get("cues", {}).get(q) for r in rs]) for q in first.get("cues", {})},
            "baselines": {b: avg([r.get("baselines", {}).get(b) for r in rs]) for b in first.get("baselines", {})}}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("evals", nargs="+", type=Path, help="folders written by `amsrc evaluate`")
    ap.add_argument("--mean", action="store_true",
                    help="the folders are one model on several validation sets: print the baselines and the model "
                         "as the mean over them (the sets are named in a last line)")
    args = ap.parse_args(argv)
    results = [(d, json.loads((d / "results.json").read_text())) for d in args.evals]
    if args.mean:
        results = [(args.evals[0], _mean([r for _, r in results]))]
    cols = ("object", "raw", "smoothed")
    cues = ("S_f", "S_p", "S_m")
    print("| row | train s | " + " | ".join(f"mix {c}" for c in cols) + " | "
          + " | ".join(f"{q} {c}" for q in cues for c in cols) + " |")
    print("|" + "---|" * (2 + (1 + len(cues)) * len(cols)))
    for name, m in results[0][1].get("baselines", {}).items():
        print(f"| {name} (no learning) | - | " + " | ".join(_f(m, c) for c in cols) + " |"
              + " |" * (len(cues) * len(cols)))
    for d, r in results:
        name, secs = _train_info(d)
        got = r.get("cues", {})
        cells = [_f(r, c) for c in cols] + [_f(got.get(q), c) for q in cues for c in cols]
        print(f"| {name} | {secs} | " + " | ".join(cells) + " |")
    if args.mean:
        print(f"\nmean over {len(args.evals)} sets: {', '.join(str(d) for d in args.evals)}")


if __name__ == "__main__":
    main()
