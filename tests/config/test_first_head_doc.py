"""docs/first_head.md, followed step by step: its files are written and its commands run."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "first_head.md"


def _blocks() -> list[tuple[str, str]]:
    """(language, body) of every fenced code block of the page, in order."""
    return re.findall(r"```(\w+)\n(.*?)```", DOC.read_text(), flags=re.S)


@pytest.mark.slow
def test_the_first_head_walkthrough_works_as_written(tmp_path, pip_install_into, short_job):
    blocks = _blocks()
    files = [(body.splitlines()[0][len("# file: "):], body) for _, body in blocks if body.startswith("# file: ")]
    assert {p for p, _ in files} == {"my_heads/my_heads/__init__.py", "my_heads/pyproject.toml",
                                     "my_heads/my_heads/configs/model/roi_heads/mask_head/DilatedMaskHead_small.yaml"}
    for rel, body in files:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(body)
    commands = [line for lang, body in blocks if lang == "bash" for line in body.splitlines() if line.strip()]
    assert commands[0] == "pip install ./my_heads"

    site = tmp_path / "site"
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PYTHONPATH": str(site), "PYTHONWARNINGS": "ignore"}
    outputs = []
    for command in commands:
        args = shlex.split(command)
        if args[:2] == ["pip", "install"]:
            (source,) = args[2:]
            pip_install_into(tmp_path / source, site)  # into a temporary folder, not this venv
            outputs.append("")
            continue
        args = [str(bin_dir / args[0]), *args[1:]]
        if "-m" in args:
            args += short_job + [f"hydra.sweep.dir={tmp_path / 'sweep'}"]
        res = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
        assert res.returncode == 0, f"{command}:\n{res.stderr[-3000:]}"
        outputs.append(res.stdout)

    components, composed = outputs[1], outputs[2]
    assert "DilatedMaskHead" in components and "dilation: int = 2" in components and "loss_weight" in components
    assert "name: DilatedMaskHead" in composed and "dilation: 3" in composed and "channels: 32" in composed
    summary = (tmp_path / "sweep" / "summary.md").read_text()
    assert summary.count("| completed |") == 2
    assert "mask_head=MaskRCNNConvUpsampleHead_quick" in summary and "mask_head=DilatedMaskHead_small" in summary
