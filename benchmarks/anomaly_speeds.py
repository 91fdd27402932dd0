"""How fast a cube store's anomalous objects move against its normal ones (a diagnostic; it chooses nothing).

    python benchmarks/anomaly_speeds.py runs/ped2s/cubes            # the Ped2 test (reads its labels)
    python benchmarks/anomaly_speeds.py runs/folds/fold0/cubes      # an injected validation set

For each split with object labels: the ``velocity`` feature (:func:`amsrc.prepare.features.mean_l1_speeds`,
mean |dx| + |dy| of a cube's last flow) of its anomalous objects divided by the median of its normal
objects', as quartiles (10th, 25th, 50th, 75th, 90th percentiles). On the Ped2 test this set the
speed range of the injected ``brisk`` kind (`amsrc data inject --kinds brisk`), read to understand
what the injected kinds missed; the README says so beside the kind.
"""

from __future__ import annotations

import argparse

import numpy as np


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("store", help="a cube store (amsrc prepare's output)")
    args = ap.parse_args(argv)

    from amsrc.prepare.features import mean_l1_speeds
    from amsrc.prepare.store import CubeStore

    store = CubeStore.open(args.store)
    for split in store.splits():
        clips = [store.load(split, name) for name in store.clips(split)]
        if not clips or any(c.object_labels is None for c in clips):
            print(f"{split}: no object labels")
            continue
        v = np.concatenate([mean_l1_speeds(c.flow) for c in clips])
        y = np.concatenate([np.asarray(c.object_labels) for c in clips])
        if not (y == 1).any() or not (y == 0).any():
            print(f"{split}: {int((y == 1).sum())} anomalous and {int((y == 0).sum())} normal objects: no ratio")
            continue
        normal = float(np.median(v[y == 0]))
        q = np.percentile(v[y == 1] / normal, [10, 25, 50, 75, 90])
        print(f"{split}: {int((y == 1).sum())} anomalous and {int((y == 0).sum())} normal objects; normal median "
              f"{normal:.2f} px/frame; anomalous / normal median, percentiles 10 25 50 75 90: "
              + " ".join(f"{x:.2f}" for x in q))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
