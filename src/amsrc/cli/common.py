"""What every command group shares: the device and progress options, the dataset summary."""

from __future__ import annotations

import argparse


def add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def print_summary(index, masks: bool = False) -> None:
    """Per split: clips, frames, anomalous frames (and how many clips have pixel masks)."""
    for split, row in index.summary().items():
        anomalous = "unlabelled" if row["anomalous"] is None else f"{row['anomalous']} anomalous"
        n_masks = sum(c.masks is not None for c in index.clips(split)) if masks else 0
        with_masks = f"  pixel masks for {n_masks} clips" if n_masks else ""
        print(f"  {split:9s} {row['clips']:4d} clips  {row['frames']:7d} frames  {anomalous}{with_masks}")
