"""Following the config from the command line to the training loop enters each file once, going
down: ``cli.py`` -> ``launch.py`` -> ``run.py`` -> ``train_job.py`` -> ``trainer.py``. A hook records
the call stack when training starts; the framework files on it, in order, must be exactly that."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from tiny_job import tiny_job

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]

#: tools/train_net.py plus a hook that writes the framework files on the stack at before_train.
TRAIN_NET_WITH_STACK = textwrap.dedent("""
    import inspect, json, os
    from framework.engine.hooks import HOOKS, Hook

    @HOOKS.register()
    class StackRecorder(Hook):
        def before_train(self, loop):
            files = [os.path.relpath(f.filename, os.environ["REPO"]) for f in reversed(inspect.stack()[1:])]
            files = [f for f in files if f.startswith("framework" + os.sep)]
            with open(os.environ["STACK_FILE"], "w") as out:
                json.dump(files, out)

    from framework.engine.cli import main
    main()
""")


def test_the_command_line_reaches_the_trainer_through_each_file_once(tmp_path):
    script = tmp_path / "train_net_with_stack.py"
    script.write_text(TRAIN_NET_WITH_STACK)
    stack_file = tmp_path / "stack.json"
    proc = subprocess.run([sys.executable, str(script), *tiny_job(1), "+hook@hooks.stack=StackRecorder",
                           f"hydra.run.dir={tmp_path / 'run'}"], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "REPO": str(REPO), "STACK_FILE": str(stack_file),
                               "PYTHONWARNINGS": "ignore"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    files = json.loads(stack_file.read_text())
    entered = [f for i, f in enumerate(files) if i == 0 or files[i - 1] != f]  # consecutive frames of a file: one entry
    engine = os.path.join("framework", "engine")
    assert len(files) >= 5 and entered == [os.path.join(engine, name) for name in ("cli.py", "launch.py", "run.py", "train_job.py",
                                                                 "trainer.py")], files
