"""A killed job loses nothing: SIGKILL during a checkpoint write leaves the previous checkpoint and
``last_checkpoint`` loadable, and a run SIGKILLed mid-training then resumed ends bitwise equal to an
uninterrupted run, with aspect-ratio grouping on: the default pipeline with 0 data workers, and
large-scale jitter + copy-paste (whose draws of other images must be replayed too) with 2 (CPU)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from tiny_job import FEW_DETECTIONS, SMALL_IMAGES

pytestmark = pytest.mark.slow

#: The main job, shrunk; aspect-ratio grouping stays on (the default).
TINY = [
    *SMALL_IMAGES,
    "train.max_iter=6",
    "lr_scheduler.warmup_iters=2",
    "lr_scheduler.steps=[4]",
    "hooks.checkpointer.period=2",
    "hooks.writer.period=2",
]

#: The training pipelines the kill-and-resume test runs: the default one, and the LSJ + copy-paste
#: preset's on 96x96 images (its pipeline replaces the default's, so the default's sizes are left out),
#: with 20 detections per test image (the evaluation is most of a run's time).
PIPELINES = {
    "default": TINY,
    "copy_paste": [*(o for o in TINY if not o.startswith("input.train.")), "experiment=lsj_copy_paste_quick",
                   "input.train.augmentations.0.image_size=96", *FEW_DETECTIONS],
}

#: tools/train_net.py plus a hook that SIGKILLs the process after a given step (no cleanup runs).
TRAIN_NET_WITH_KILL = textwrap.dedent("""
    import os, signal
    from framework.engine.hooks import HOOKS, Hook

    @HOOKS.register()
    class KillAfter(Hook):
        priority = 90  # after the step's checkpoint
        def __init__(self, *, iteration: int = 0):
            self.iteration = iteration
        def after_step(self, loop):
            if loop.iter == self.iteration:
                os.kill(os.getpid(), signal.SIGKILL)

    from framework.engine.cli import main
    main()
""")


def _train(script: Path, args: list[str], cwd: Path, *, killed: bool = False) -> None:
    proc = subprocess.run([sys.executable, str(script), *args], cwd=cwd, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})
    if killed:
        assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    else:
        assert proc.returncode == 0, proc.stderr[-3000:]


def test_sigkill_during_a_checkpoint_write_keeps_the_previous_one(tmp_path):
    script = tmp_path / "save_and_die.py"
    script.write_text(textwrap.dedent(f"""
        import os, signal, torch
        from framework.checkpoint import Checkpointer

        torch.manual_seed(0)
        model = torch.nn.Linear(300, 300)
        checkpointer = Checkpointer(model, {str(tmp_path / "run")!r})
        checkpointer.save("model_0000009", iteration=9)
        torch.save(model.state_dict(), {str(tmp_path / "expected.pth")!r})

        def dies_halfway(obj, f, *args, **kwargs):  # a real partial write, then SIGKILL
            f.write(b"\\x80" * 100_000)
            f.flush()
            os.kill(os.getpid(), signal.SIGKILL)

        torch.save = dies_halfway
        with torch.no_grad():
            model.weight.add_(1.0)
        checkpointer.save("model_0000019", iteration=19)
    """))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr

    from framework.checkpoint import Checkpointer

    run = tmp_path / "run"
    assert (run / "last_checkpoint").read_text() == "model_0000009.pth"
    assert not (run / "model_0000019.pth").exists()
    leftovers = list(run.glob(".model_0000019.pth.*.tmp"))
    assert len(leftovers) == 1  # the interrupted write stays aside, never under the checkpoint's name

    model = torch.nn.Linear(300, 300)
    checkpointer = Checkpointer(model, str(run))
    extra = checkpointer.load(checkpointer.get_checkpoint_file())
    assert extra["iteration"] == 9
    expected = torch.load(tmp_path / "expected.pth", weights_only=True)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in expected.items())
    checkpointer.save("model_0000019", iteration=19)  # the next save of that name clears the leftover
    assert not any(p.exists() for p in leftovers)


# 2 workers with copy-paste only: a run's batches, draws included, must not depend on the workers,
# and one case covers both (each case is three training processes).
@pytest.mark.parametrize("num_workers, pipeline", [(0, "default"), (2, "copy_paste")])
def test_sigkill_then_resume_equals_the_uninterrupted_run(tmp_path, num_workers, pipeline, full_runs):
    full_run = full_runs(pipeline)
    script = tmp_path / "train_net_with_kill.py"
    script.write_text(TRAIN_NET_WITH_KILL)
    cut = tmp_path / "cut"
    args = [*PIPELINES[pipeline], f"dataloader.train.num_workers={num_workers}", f"hydra.run.dir={cut}"]
    # Killed after step 4: the checkpoint of step 3 is the last one, step 4 is lost and redone.
    _train(script, [*args, "+hook@hooks.kill=KillAfter", "hooks.kill.iteration=4"], tmp_path, killed=True)
    assert (cut / "last_checkpoint").read_text() == "model_0000003.pth"
    _train(script, [*args, "resume=true"], tmp_path)

    a = torch.load(full_run / "model_final.pth", weights_only=True)
    b = torch.load(cut / "model_final.pth", weights_only=True)
    assert a["trainer"]["iteration"] == b["trainer"]["iteration"] == 5
    assert a["scheduler"] == b["scheduler"]
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    for k, state in a["optimizer"]["state"].items():
        for name, value in state.items():
            assert torch.equal(value, b["optimizer"]["state"][k][name]), f"{k}.{name}"


@pytest.fixture(scope="module")
def full_runs(tmp_path_factory) -> Callable[[str], Path]:
    """The uninterrupted run of a pipeline (0 workers: the batches do not depend on the number of
    workers), made on first use and shared."""
    runs: dict[str, Path] = {}

    def full_run(pipeline: str) -> Path:
        if pipeline not in runs:
            root = tmp_path_factory.mktemp(f"full_{pipeline}")
            script = root / "train_net_with_kill.py"
            script.write_text(TRAIN_NET_WITH_KILL)
            _train(script, [*PIPELINES[pipeline], "dataloader.train.num_workers=0", f"hydra.run.dir={root / 'run'}"], root)
            runs[pipeline] = root / "run"
        return runs[pipeline]

    return full_run


def test_resuming_with_another_model_config_fails_clearly_and_loses_nothing(tmp_path):
    from framework.checkpoint.errors import IncompatibleCheckpointError
    from framework.config.compose import compose
    from framework.engine.run import run

    quick = [*TINY, "train.max_iter=2", "dataloader.train.num_workers=0"]
    run(compose(quick), output_dir=tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.glob("*.pth")}
    with pytest.raises(IncompatibleCheckpointError, match=r"model_final\.pth.*\n(.*\n)*.*roi_heads\.box_head\.fc1\.weight: "
                                                        r"\(256, 3136\) in the checkpoint, \(64, 3136\) in the model"):
        run(compose([*quick, "train.max_iter=4", "resume=true", "model.roi_heads.box_head.fc_dim=64"]), output_dir=tmp_path)
    assert {p.name: p.read_bytes() for p in tmp_path.glob("*.pth")} == before
    assert (tmp_path / "last_checkpoint").read_text() == "model_final.pth"
