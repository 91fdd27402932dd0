"""What every command group shares: the device and progress options, checked numbers, the dataset summary."""

from __future__ import annotations

import argparse
import math

from amsrc.config import preset_names
from amsrc.errors import ConfigError
from amsrc.model.network import variant_names
from amsrc.utils import check_device


class HelpFormatter(argparse.HelpFormatter):
    """Every option's help ends with its default, unless the help already says what the default is."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        d = action.default
        says_default = "(default" in text or "default:" in text
        if action.option_strings and not says_default and d not in (None, False, [], argparse.SUPPRESS):
            text += " (default: %(default)s)"
        return text


def finish_parsers(parser: argparse.ArgumentParser) -> None:
    """Give ``parser`` and all its subcommands' parsers :class:`HelpFormatter`, and every command
    (a parser without subcommands) ``-q/--quiet`` and ``-v/--verbose``."""
    parser.formatter_class = HelpFormatter
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    for a in subs:
        for sp in a.choices.values():
            finish_parsers(sp)
    if not subs and parser.get_default("func") is not None:
        parser.add_argument("-q", "--quiet", action="count", default=0,
                            help="only warnings and errors on stderr (no epoch or per-clip lines)")
        parser.add_argument("-v", "--verbose", action="count", default=0, help="also debug lines on stderr")


def add_preset(p: argparse.ArgumentParser, default: str | None, help: str) -> None:
    p.add_argument("--preset", default=default, choices=preset_names(), metavar="PRESET",
                   help=f"{help}; one of {', '.join(preset_names())}")


def add_variant(p: argparse.ArgumentParser) -> None:
    p.add_argument("--variant", default=None, choices=variant_names(), metavar="VARIANT",
                   help=f"network variant (paper Table 2), one of {', '.join(variant_names())}; default: the preset's")


def _number(kind, low: float | None, low_open: bool, what: str):
    """An argparse ``type`` that parses ``kind`` and refuses NaN, infinities and values under ``low``."""
    def parse(text: str):
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if isinstance(v, float) and not math.isfinite(v):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        if low is not None and (v <= low if low_open else v < low):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return v
    parse.__name__ = what  # argparse names the type in its messages
    return parse


finite_float = _number(float, None, False, "a finite number")
positive_float = _number(float, 0.0, True, "a number > 0")
positive_int = _number(int, 1, False, "an integer >= 1")
nonneg_int = _number(int, 0, False, "an integer >= 0")


def device_arg(text: str) -> str:
    try:
        return check_device(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


ENGINE_HELP = ("what runs the network: torch, onnxruntime (CPU; needs the export extra; scores agree within 1e-4), "
               "onnxruntime-int8 (opt-in: int8, faster, scores not the same; benchmarks/int8.py measures the cost), or "
               "auto: onnxruntime on the CPU where installed, else torch")


def add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="cpu", type=device_arg, help="cpu, cuda or cuda:N (default cpu)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def print_summary(index, masks: bool = False) -> None:
    """Per split: clips, frames, anomalous frames (and how many clips have pixel masks)."""
    for split, row in index.summary().items():
        anomalous = "unlabelled" if row["anomalous"] is None else f"{row['anomalous']} anomalous"
        n_masks = sum(c.masks is not None for c in index.clips(split)) if masks else 0
        with_masks = f"  pixel masks for {n_masks} clips" if n_masks else ""
        print(f"  {split:9s} {row['clips']:4d} clips  {row['frames']:7d} frames  {anomalous}{with_masks}")
