"""Cross-validated choices on Ped2's normal footage: recipes compared over several injected folds.

    python benchmarks/folds.py --out runs/folds --recipe ped2 --recipe noflip train.flip=false
    python benchmarks/folds.py --out runs/folds --folds 0 1 --recipe ped2        # fewer folds, faster
    python benchmarks/folds.py --out runs/folds --recipe ped2 --probe brisk      # and a kind left out of the mix

One injected validation set (`amsrc data inject`) per fold: fold k holds out the k-th block of
``--holdout`` (4) of the 16 normal training clips, counted from the end (fold 0: clips 13-16, as
`benchmarks/ped2.py`'s validation; fold 3: clips 01-04), with seed k, so the four folds together put
pseudo-anomalies into every normal clip once and no clip is ever both fitted and scored. Each fold's
cubes are prepared once (``ped2`` preset); each ``--recipe NAME [SECTION.KEY=VALUE ...]`` trains on
the fold's other clips and is evaluated on its injected clips (``OUT/fold<k>/train_NAME``,
``eval_NAME``). A recipe changes the model, training or scoring; box, flow and cube settings would
need a store per recipe and are refused. No test label is read.

Prints one markdown table: per recipe, the mean over the folds of object-level and frame-level
micro AUROC (raw, Gaussian sigma 3) of the mix and of each cue alone, the smoothed AUROC of each
fold, and the non-learned baselines (velocity, copy-last) on the same cubes, so a recipe that loses
to them is seen to lose. Then a table per kind of pseudo-anomaly (fast, contraflow, loiter, rigid):
the smoothed AUROC of that kind's frames against the fold's normal frames, mean over the folds: the
kind a recipe wins or loses on (the mix and each cue alone), and where the baselines stand
(velocity sees only speed). ``--probe KIND`` adds a column for a kind left out of the folds' mix
(``brisk``: a walker gliding at 1.3-2x walking speed, the hard case for speed alone): each fold's
held-out clips are injected a second time with that kind alone (``OUT/fold<k>/probe_KIND``, same
clips and seed, its own store) and scored by the same models, so no training is added.
Interrupted runs resume (finished trainings are reused); ``--report`` trains and evaluates nothing:
the tables from the finished models in ``OUT`` (the per-kind table scores them again, on the CPU;
``--probe`` sets are written and prepared if missing). Writes ``OUT/folds.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from ped2 import PED2_FPS
from rows import _f as _pct
from rows import _mean

BASELINES = ("velocity", "copy-last")  # the per-kind table's non-learned rows


def per_kind(fold: Path, names: list[str], at: Path | None = None) -> dict[str, dict[str, float]]:
    """{row: {kind: smoothed AUROC of the kind's anomalous frames against all normal frames}} of one
    fold: each recipe's model and each of its cues alone (rows "NAME S_f", ...; scored again on the
    fold's store, as `amsrc evaluate` scores them), and each of BASELINES (with the preset's frame rule
    and smoothing, as `amsrc evaluate` does). ``at``: the injected set and store of a probe
    (``fold/probe_KIND``, the same held-out clips) instead of the fold's own."""
    import dataclasses

    from amsrc.detector import AMSRC
    from amsrc.eval.baselines import BaselineScorer
    from amsrc.eval.evaluate import cue_clips
    from amsrc.eval.metrics import roc_auc
    from amsrc.prepare.store import CubeStore
    from amsrc.scoring import smooth

    def gaussian(cfg):
        return cfg if cfg.smoothing != "none" else dataclasses.replace(cfg, smoothing="gaussian")

    at = at or fold
    kinds = {e["clip"]: e["kind"] for e in json.loads((at / "data" / "inject.json").read_text())["events"]}
    store = CubeStore.open(at / "cubes")
    rows: dict[str, list] = {}
    first = None  # the first recipe's frame rule and smoothing, which the baseline rows use
    for name in names:
        det = AMSRC.load(fold / f"train_{name}" / "model.pt")
        cfg = gaussian(det.preset_.score)
        first = first or cfg
        clips = det.score_store(store, "testing")
        for row, got in {name: clips, **{f"{name} {q}": v for q, v in cue_clips(det, clips).items()}}.items():
            rows[row] = [(kinds[c.name], smooth(c.frame_raw, cfg), np.asarray(c.labels)) for c in got]
    for b in BASELINES:  # as the mean table's baseline rows, which evaluate scored with the first recipe's settings
        got = BaselineScorer(b, first).fit(store).score_store(store, "testing")
        rows[b] = [(kinds[c.name], smooth(c.frame_raw, first), np.asarray(c.labels)) for c in got]
    out: dict[str, dict[str, float]] = {}
    for row, clips in rows.items():
        normal = np.concatenate([f[y == 0] for _, f, y in clips])
        out[row] = {}
        for kind in sorted({kd for kd, _, _ in clips}):  # a kind's frames pooled over its clips
            ab = np.concatenate([f[y == 1] for kd, f, y in clips if kd == kind])
            out[row][kind] = roc_auc(np.r_[normal, ab], np.r_[np.zeros(len(normal)), np.ones(len(ab))])
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "ped2"))
    ap.add_argument("--out", required=True, help="output folder (kept: finished folds and trainings are reused)")
    ap.add_argument("--folds", type=int, nargs="+", default=[0, 1, 2, 3])
    ap.add_argument("--holdout", type=int, default=4, help="clips held out per fold")
    ap.add_argument("--recipe", nargs="+", action="append", required=True, metavar="NAME [SECTION.KEY=VALUE]",
                    help="a name and the settings it changes from the ped2 preset; repeat for each recipe")
    ap.add_argument("--preset", default="ped2")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--probe", nargs="+", default=[], metavar="KIND",
                    help="kinds left out of the folds' mix (e.g. brisk): each fold's held-out clips get a second "
                         "injected set of that kind alone (OUT/fold<k>/probe_KIND), scored by the fold's models and "
                         "the baselines: a column each in the per-kind table")
    ap.add_argument("--report", action="store_true", help="train and evaluate nothing: the tables from OUT's finished models")
    args = ap.parse_args(argv)

    from amsrc.config import PREPARE_SECTIONS, get_preset
    from amsrc.data.inject import InjectSettings, inject
    from amsrc.errors import ConfigError
    from amsrc.eval.pipeline import run_pipeline
    from amsrc.prepare.run import prepare_dataset
    from amsrc.utils import write_json_atomic

    recipes = {r[0]: r[1:] for r in args.recipe}
    if len(recipes) != len(args.recipe):
        raise SystemExit("folds.py: two recipes share a name")
    if set(recipes) & set(BASELINES):
        raise SystemExit(f"folds.py: a recipe may not be named {' or '.join(BASELINES)} (the baseline rows)")
    for name, sets in recipes.items():
        bad = [s for s in sets if s.partition(".")[0].strip() in PREPARE_SECTIONS]
        if bad:
            raise ConfigError(f"recipe {name}: {', '.join(bad)} would change the cubes; folds.py compares recipes "
                              "on one store per fold (model, train and score settings only)")
    out, data = Path(args.out), Path(args.data)
    got: dict = {name: {} for name in recipes}
    for k in args.folds:
        fold = out / f"fold{k}"
        for kind in args.probe:  # the same held-out clips and seed, only the kind differs; kept once written
            at = fold / f"probe_{kind}"
            inject([data], at / "data", InjectSettings(seed=k, kinds=(kind,), holdout=args.holdout, fold=k, fps=PED2_FPS))
            prepare_dataset(at / "data", get_preset(args.preset).prepare, at / "cubes", workers=args.workers,
                            progress=False, preset_name=args.preset)
        if args.report:
            for name in recipes:
                got[name][k] = json.loads((fold / f"eval_{name}" / "results.json").read_text())
            continue
        res = inject([data], fold / "data", InjectSettings(seed=k, holdout=args.holdout, fold=k, fps=PED2_FPS))
        print(f"fold {k}: held out {', '.join(res.held_out)}; "
              + ", ".join(f"{e.clip} {e.kind}" for e in res.events), flush=True)
        for name, sets in recipes.items():
            t0 = time.perf_counter()
            r = run_pipeline(fold / "data", args.preset, fold, workers=args.workers, device=args.device,
                             progress=False, log=lambda *_: None, overrides=sets, name=name)
            got[name][k] = r
            print(f"  {name}: raw {_pct(r, 'raw')} smoothed {_pct(r, 'smoothed')} object {_pct(r, 'object')} "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)

    folds = list(args.folds)
    kinds = {k: per_kind(out / f"fold{k}", list(recipes)) for k in folds}
    for kind in args.probe:
        for k in folds:
            for row, v in per_kind(out / f"fold{k}", list(recipes), out / f"fold{k}" / f"probe_{kind}").items():
                kinds[k][row].update(v)
    keep = ("raw", "smoothed", "object", "cues", "baselines")
    write_json_atomic(out / "folds.json", {
        "folds": folds, "holdout": args.holdout, "preset": args.preset, "recipes": recipes,
        "results": {n: {str(k): {x: r.get(x) for x in keep} for k, r in rs.items()} for n, rs in got.items()},
        "probe": args.probe, "per_kind": {str(k): v for k, v in kinds.items()}})

    cols = ("object", "raw", "smoothed")
    cues = ("S_f", "S_p", "S_m")
    print(f"\nMean over folds {', '.join(map(str, folds))} (micro AUROC x100; object, raw, Gaussian sigma 3):\n")
    print("| row | " + " | ".join(f"mix {c}" for c in cols) + " | " + " | ".join(f"{q} {c}" for q in cues for c in ("raw", "smoothed"))
          + " | " + " | ".join(f"fold {k} smoothed" for k in folds) + " |")
    print("|" + "---|" * (1 + len(cols) + 2 * len(cues) + len(folds)))
    first = next(iter(got.values()))
    base = _mean([first[k] for k in folds])
    for b, m in base["baselines"].items():
        per = [_pct(first[k]["baselines"].get(b), "smoothed") for k in folds]
        print(f"| {b} (no learning) | " + " | ".join(_pct(m, c) for c in cols) + " |" + " |" * (2 * len(cues))
              + " " + " | ".join(per) + " |")
    for name, rs in got.items():
        m = _mean([rs[k] for k in folds])
        cells = [_pct(m, c) for c in cols] + [_pct(m["cues"].get(q), c) for q in cues for c in ("raw", "smoothed")]
        print(f"| {name} | " + " | ".join(cells) + " | " + " | ".join(_pct(rs[k], "smoothed") for k in folds) + " |")

    names = sorted({kd for v in kinds.values() for row in v.values() for kd in row})
    print(f"\nPer kind: smoothed AUROC of its frames against the normal frames, mean over folds {', '.join(map(str, folds))}; "
          "the last column is the mean of the kinds' columns, each kind weighed alike:\n")
    print("| row | " + " | ".join(names) + " | kinds' mean |")
    print("|" + "---|" * (2 + len(names)))
    for row in [*BASELINES, *(r for name in recipes for r in kinds[folds[0]] if r.split(" ")[0] == name)]:
        vals = [np.mean([kinds[k][row][kd] for k in folds if kd in kinds[k][row]]) for kd in names]
        label = f"{row} (no learning)" if row in BASELINES else row
        print(f"| {label} | " + " | ".join(f"{100 * v:.1f}" for v in vals) + f" | {100 * np.mean(vals):.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
