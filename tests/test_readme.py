"""The README's "Score your own camera" example, run as written in a fresh folder, after the
Quick start's install: every command exits 0 and writes what the README says it writes."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _section(title: str) -> str:
    m = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## )", README, flags=re.S | re.M)
    assert m, f"README has no section '## {title}'"
    return m.group(1)


def _commands(block: str) -> list[str]:
    """The shell commands of a bash block: continuation lines joined, comments dropped."""
    text = block.replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = re.sub(r"\s+#.*$", "", line).strip()
        if line and not line.startswith("#"):
            out.append(line)
    return out


def _first_bash(section: str) -> str:
    m = re.search(r"```bash\n(.*?)```", section, flags=re.S)
    assert m
    return m.group(1)


def test_quick_start_installs_what_the_examples_need():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    first = _commands(_first_bash(_section("Quick start")))[0]
    m = re.search(r'pip install -e "\.\[([a-z,]+)\]"', first)
    assert m, first
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    have = {re.split(r"[<>=\[ ]", d)[0] for e in m.group(1).split(",") for d in extras[e]}
    example = "\n".join(_commands(_first_bash(_section("Score your own camera"))))
    if "amsrc export" in example:  # the export and its --check need ONNX and ONNX Runtime
        assert {"onnx", "onnxruntime"} <= have, have
    assert not any(c.startswith("pip ") for c in _commands(_first_bash(_section("Score your own camera"))))


@pytest.mark.slow
def test_score_your_own_camera_example_runs_as_written(tmp_path):
    cmds = _commands(_first_bash(_section("Score your own camera")))
    assert cmds[0].startswith("amsrc data synth") and any(c.startswith("amsrc score") for c in cmds)
    amsrc = Path(sys.executable).with_name("amsrc")
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2"), "PYTHONUNBUFFERED": "1"}
    for cmd in cmds:
        argv = shlex.split(cmd)
        assert argv[0] == "amsrc", cmd
        p = subprocess.run([str(amsrc), *argv[1:]], cwd=tmp_path, capture_output=True, text=True, env=env,
                           timeout=900)
        assert p.returncode == 0, f"{cmd}\n{p.stderr[-3000:]}"
    for name in ("cam.pt", "scores.csv", "events.jsonl", "report.html", "overlay.mp4", "cam.onnx"):
        assert (tmp_path / name).is_file() and (tmp_path / name).stat().st_size > 0, name
    csv = (tmp_path / "scores.csv").read_text().splitlines()
    assert csv[0].startswith("# source: ") and "10 fps" in csv[0]  # the scene's own rate, from its dataset.json
    assert csv[1].startswith("frame,time,raw,score")
