"""``amsrc train``, ``evaluate``, ``run`` and ``demo``: the experiment on a dataset, stage by stage or in one go."""

from __future__ import annotations

import argparse
from pathlib import Path

from amsrc.cli.common import ENGINE_HELP, add_common, add_preset, add_variant, nonneg_int, positive_int
from amsrc.config import apply_overrides
from amsrc.data.synth import write_scene
from amsrc.detector import AMSRC
from amsrc.eval.evaluate import evaluate
from amsrc.eval.pipeline import format_result, run_pipeline
from amsrc.prepare.store import CubeStore
from amsrc.utils import check_output


def cmd_train(args: argparse.Namespace) -> int:
    out = check_output(args.out, "dir", "--out", {"cube store": args.store}, {"cube store": args.store})
    store = CubeStore.open(Path(args.store))
    det = AMSRC(preset=args.preset, variant=args.variant, epochs=args.epochs, device=args.device,
                progress=not args.no_progress, overrides=args.set)
    det.fit(store, out, resume=args.resume)
    print(f"model: {det.checkpoint_}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    out = check_output(args.out, "dir", "--out", {"model": args.model, "cube store": args.store},
                       {"cube store": args.store})
    det = AMSRC.load(Path(args.model), device=args.device, engine=args.engine)
    apply_overrides(det.preset_, args.set, allowed=("score",))  # another score rule for the same network
    result = evaluate(det, CubeStore.open(Path(args.store)), out, split=args.split)
    print(format_result(result))
    print(f"results: {out / 'results.json'}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    out = check_output(args.out, "dir", "--out", {"dataset": args.root}, {"dataset": args.root})
    run_pipeline(Path(args.root), args.preset, out, variant=args.variant, epochs=args.epochs,
                 workers=args.workers, device=args.device, progress=not args.no_progress, overrides=args.set)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    out = check_output(args.out, "dir", "--out")
    scene = out / "scene"
    if not (scene / "training").is_dir():
        write_scene(scene, seed=args.seed)
        print(f"wrote a synthetic scene (seed {args.seed}) to {scene}")
    result = run_pipeline(scene, "synthetic", out, workers=args.workers, progress=not args.no_progress)
    print(f"demo: micro AUROC {result['raw']['micro']:.4f} (raw), {result['smoothed']['micro']:.4f} "
          f"({result['smoothing']}); plots and results.json in {out / ('eval_' + result['variant'])}")
    return 0


def _add_set(p: argparse.ArgumentParser, prepare: bool = False) -> None:
    what = "model, train, score, box, flow or cube (boxes.*, flow.*, prepare.*)" if prepare else "model, train or score"
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help=f"change one {what} setting of the preset (repeatable), e.g. "
                        "--set model.skips=1 --set train.lr=2e-4; recorded in model.pt")


def add_parsers(sub) -> None:
    tr = sub.add_parser("train", help="train on the training cubes of a cube store")
    tr.add_argument("store", help="cube store written by `amsrc prepare`")
    add_preset(tr, None, "settings preset (default: the one the store was prepared with, with the store's prepare "
               "settings; a preset that disagrees with the store is refused)")
    add_variant(tr)
    tr.add_argument("--epochs", type=positive_int, default=None, help="training epochs; default: the preset's")
    tr.add_argument("--out", required=True, help="folder for the log, checkpoints and model.pt")
    tr.add_argument("--resume", action="store_true", help="continue an interrupted run from its last epoch")
    _add_set(tr)
    add_common(tr)
    tr.set_defaults(func=cmd_train)

    ev = sub.add_parser("evaluate", help="score the test cubes and compare with the frame labels")
    ev.add_argument("model", help="model.pt written by `amsrc train`")
    ev.add_argument("store", help="cube store written by `amsrc prepare`")
    ev.add_argument("--split", default="testing", help="the store's split to score (one with frame labels)")
    ev.add_argument("--out", required=True, help="folder for results.json and plots")
    ev.add_argument("--set", action="append", default=[], metavar="score.KEY=VALUE",
                    help="score the model with another score setting (repeatable), e.g. --set score.frame_topk=2; "
                         "only score.* (the network is the model's)")
    ev.add_argument("--engine", choices=AMSRC.ENGINES, default="auto", help=ENGINE_HELP)
    add_common(ev)
    ev.set_defaults(func=cmd_evaluate)

    run = sub.add_parser("run", help="prepare, train and evaluate in one go")
    run.add_argument("root", help="dataset root")
    add_preset(run, "default", "settings preset")
    add_variant(run)
    run.add_argument("--epochs", type=positive_int, default=None, help="training epochs; default: the preset's")
    run.add_argument("--workers", type=positive_int, default=1, help="processes that prepare cubes")
    run.add_argument("--out", required=True, help="folder for cubes/, train_VARIANT/ and eval_VARIANT/")
    _add_set(run, prepare=True)
    add_common(run)
    run.set_defaults(func=cmd_run)

    demo = sub.add_parser("demo", help="the whole pipeline on a built-in synthetic scene")
    demo.add_argument("--out", default="amsrc-demo", help="output folder (default ./amsrc-demo)")
    demo.add_argument("--seed", type=nonneg_int, default=0, help="seed of the synthetic scene")
    demo.add_argument("--workers", type=positive_int, default=1, help="processes that prepare cubes")
    add_common(demo)
    demo.set_defaults(func=cmd_demo)
