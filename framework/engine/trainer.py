"""The training loop: a thin iteration-based trainer whose behaviour is extended by hooks.

One step (:meth:`Trainer.run_step`)::

    data = next(data_loader)                          # time -> "data_time"
    loss_dict = model(data)                           # under torch.autocast when amp != "none"
    check every loss is finite                        # else FloatingPointError (or a skipped step), before any update
    loss.backward()                                   # scaled by a GradScaler for fp16
    hooks.after_backward()
    clip gradients (optional); optimizer.step()

Hooks run around each step (:mod:`framework.engine.hooks.base` says what they may rely on); a
hook that evaluates does it through ``loop.evaluate``, which frames it with every hook's
``before_eval`` / ``after_eval``, and ``train()`` returns the last metrics.

The trainer does not know about the model: any ``nn.Module`` that, in train mode, takes a list of
per-image dicts and returns a dict of scalar loss tensors (named ``loss_*``) works.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from typing import Any, Callable, Literal, Optional

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from framework.engine.hooks.base import Hook, TrainLoop
from framework.errors import ConfigError, did_you_mean
from framework.layers.amp import amp_autocast, resolve_amp
from framework.utils import comm
from framework.utils.events import EventStorage
from framework.utils.seeding import SeedStream, derive_seed, seed_global_rngs

__all__ = ["Trainer", "GradClipper"]

logger = logging.getLogger(__name__)

_PRECISION_NAMES = {"none": "float32", "bf16": "bfloat16 (autocast)", "fp16": "float16 (autocast, GradScaler)"}


class GradClipper:
    """Gradient clipping as in detectron2's ``SOLVER.CLIP_GRADIENTS``.

    ``clip_type``: ``"value"`` clamps each gradient element to ``[-clip_value, clip_value]``;
    ``"norm"`` scales each parameter's gradient to a ``norm_type``-norm of at most ``clip_value``
    (per parameter tensor, as detectron2); ``"full_model"`` does the same with one norm over all
    parameters together.
    """

    KEYS = ("enabled", "clip_type", "clip_value", "norm_type")

    def __init__(self, clip_type: str = "value", clip_value: float = 1.0, norm_type: float = 2.0) -> None:
        if clip_type not in ("value", "norm", "full_model"):
            raise ConfigError(
                f"grad_clip.clip_type {clip_type!r} is not one of ['value', 'norm', 'full_model']."
                f"{did_you_mean(str(clip_type), ['value', 'norm', 'full_model'])}"
            )
        if clip_value <= 0:
            raise ConfigError(f"grad_clip.clip_value must be > 0, got {clip_value}")
        self.clip_type, self.clip_value, self.norm_type = clip_type, float(clip_value), float(norm_type)

    @classmethod
    def from_config(cls, cfg: Optional[Mapping[str, Any]]) -> Optional["GradClipper"]:
        """``None`` / ``{"enabled": False, ...}`` -> no clipping; otherwise a clipper (unknown keys raise)."""
        if cfg is None:
            return None
        if not isinstance(cfg, Mapping):
            from omegaconf import DictConfig, OmegaConf

            if not isinstance(cfg, DictConfig):
                raise ConfigError(f"grad_clip must be a mapping with keys {list(cls.KEYS)} or null, got {cfg!r}")
            cfg = OmegaConf.to_container(cfg, resolve=True)  # type: ignore[assignment]
        cfg = dict(cfg)  # type: ignore[arg-type]
        for key in cfg:
            if key not in cls.KEYS:
                raise ConfigError(f"grad_clip has no key {key!r}.{did_you_mean(key, cls.KEYS)} Keys: {list(cls.KEYS)}.")
        if not cfg.pop("enabled", True):
            return None
        return cls(**cfg)

    def __call__(self, params: list[nn.Parameter]) -> None:
        params = [p for p in params if p.grad is not None]
        if self.clip_type == "value":
            torch.nn.utils.clip_grad_value_(params, self.clip_value)
        elif self.clip_type == "norm":
            for p in params:
                torch.nn.utils.clip_grad_norm_(p, self.clip_value, self.norm_type)
        else:
            torch.nn.utils.clip_grad_norm_(params, self.clip_value, self.norm_type)


class Trainer:
    """Iteration-based trainer: runs ``max_iter`` steps, calling hooks around each.

    Constructed complete: everything it runs is given here, and nothing is assigned to it later.

    Args:
        model: in train mode, ``model(batch) -> {"loss_x": 0-dim tensor, ...}``.
        data_loader: an infinite iterable of batches (a batch is what the model takes), starting at
            the batch of the first iteration this trainer runs (see :meth:`load_state_dict`).
        optimizer: e.g. from :func:`framework.engine.optim.build_optimizer`.
        checkpointer: a :class:`framework.checkpoint.Checkpointer`; the trainer adds its own state
            to it as ``trainer`` (iteration, seed, hook states), and the optimizer when it lacks one,
            so every checkpoint can resume (give it the LR scheduler, which the trainer does not know).
        max_iter: number of steps of the full training.
        hooks: ``{key: hook}`` run in the mapping's order (what :func:`framework.engine.hooks.build_hooks`
            returns: sorted by priority, config overrides included), or a sequence of hooks, run by
            their ``priority`` (stable) and keyed by class name. ``None`` entries are skipped. The
            keys key each hook's state in checkpoints.
        amp: mixed precision: ``"fp16"`` (CUDA only; with a GradScaler), ``"bf16"`` (CUDA or CPU),
            ``"auto"`` (bf16 where the hardware has it natively, else fp16 on CUDA and float32 on
            a CPU: :func:`framework.layers.amp.resolve_amp`) or ``"none"``. The parameters, the
            optimizer's state and the heads' last layers stay float32; ``self.amp`` is the
            resolved name.
        grad_clip: ``{"clip_type": "value"|"norm"|"full_model", "clip_value": 1.0, "norm_type": 2.0,
            "enabled": true}`` or None (see :class:`GradClipper`).
        seed: the seed of the training randomness: before each step, the global generators (Python,
            numpy, torch CPU and CUDA) are seeded from ``(seed, rank, iteration)``, so each step's
            random draws (e.g. anchor and proposal sampling) are the same whether the run was
            resumed, evaluated in between or not, and differ between ranks. ``None`` draws a seed
            shared by all ranks; it is saved in the trainer state, so a resumed run keeps it.
        max_nonfinite_steps: how many steps with a NaN or infinite loss to skip (counted, with a
            warning; weights, optimizer state and buffers unchanged) before stopping; 0 stops at
            the first. A step whose forward itself raises ``FloatingPointError`` (e.g. the RPN's
            check for diverged boxes) always stops.

    Attributes:
        iter: the current iteration (after training: ``max_iter`` on success).
        start_iter: the first iteration :meth:`train` runs (0, or the resumed iteration + 1).
        storage: the :class:`EventStorage` of the running ``train()``.
    """

    def __init__(
        self,
        *,
        model: nn.Module,
        data_loader: Iterable,
        optimizer: torch.optim.Optimizer,
        checkpointer: Any = None,
        max_iter: int,
        hooks: Mapping[str, Optional[Hook]] | Iterable[Optional[Hook]] = (),
        amp: Literal["none", "auto", "fp16", "bf16"] = "none",
        grad_clip: Optional[Mapping[str, Any]] = None,
        seed: Optional[int] = None,
        max_nonfinite_steps: int = 0,
    ) -> None:
        self.model = model
        self.data_loader = data_loader
        self.optimizer = optimizer
        self.max_iter = int(max_iter)
        self.grad_clipper = GradClipper.from_config(grad_clip)
        self.seed = int(comm.shared_random_seed() if seed is None else seed)
        if max_nonfinite_steps < 0:
            raise ConfigError(f"max_nonfinite_steps must be >= 0 (0: stop at the first), got {max_nonfinite_steps}")
        self.max_nonfinite_steps = int(max_nonfinite_steps)
        self.nonfinite_steps = 0  # skipped so far, over the whole run (resumed runs continue the count)

        self.device_type = _device_type(model)
        self.amp = resolve_amp(amp, self.device_type, knob="amp")
        if amp == "auto":
            logger.info(f"amp=auto: training in {_PRECISION_NAMES[self.amp]} on {self.device_type}")
        self.grad_scaler = torch.amp.GradScaler("cuda") if self.amp == "fp16" else None

        self.iter = 0
        self.start_iter = 0
        self.storage: EventStorage | None = None
        self._hooks = _keyed_hooks(hooks)
        self._loop: TrainLoop | None = None
        self._metrics: dict[str, float] = {}
        self._data_iter: Any = None

        if checkpointer is not None:
            for key, obj in (("optimizer", optimizer), ("trainer", self)):
                if key not in checkpointer.checkpointables:
                    checkpointer.add_checkpointable(key, obj)

    # ------------------------------------------------------------------ hooks
    @property
    def hooks(self) -> list[Hook]:
        """The hooks, in the order they run."""
        return list(self._hooks.values())

    def _call_hooks(self, method: str, *args: Any) -> None:
        for h in self._hooks.values():
            getattr(h, method)(self._loop, *args)

    def _run_evaluation(self, iteration: int, evaluate: Callable[[], Mapping[str, float]]) -> dict[str, float]:
        self._call_hooks("before_eval", iteration)
        results = evaluate()
        if not isinstance(results, Mapping):
            raise TypeError(f"an evaluation must return a flat dict of metrics, got {type(results).__name__}")
        metrics: dict[str, float] = {}
        for k, v in results.items():
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise TypeError(f"an evaluation must return a flat dict of numbers; got {k!r}: {v!r}")
            metrics[str(k)] = float(v)
        if metrics:
            self._metrics = dict(metrics)
        for h in reversed(self._hooks.values()):
            h.after_eval(self._loop, iteration, metrics)
        return metrics

    # ------------------------------------------------------------------ loop
    def train(self, start_iter: Optional[int] = None, max_iter: Optional[int] = None) -> dict[str, float]:
        """Run iterations ``start_iter .. max_iter - 1`` (defaults: ``self.start_iter``, ``self.max_iter``).

        ``after_train`` hooks run also when a step raises; the exception then propagates.

        Returns:
            the flat metrics of the last evaluation a hook reported (``{}`` when none did).
        """
        start_iter = self.start_iter if start_iter is None else int(start_iter)
        self.max_iter = self.max_iter if max_iter is None else int(max_iter)
        self.iter = self.start_iter = start_iter
        logger.info(f"Starting training from iteration {start_iter} to {self.max_iter}")
        self.model.train()
        with EventStorage(start_iter) as self.storage:
            self._loop = loop = TrainLoop(start_iter=start_iter, max_iter=self.max_iter, storage=self.storage,
                                          run_evaluation=self._run_evaluation)
            try:
                self._call_hooks("before_train")
                for self.iter in range(start_iter, self.max_iter):
                    loop.iter = self.storage.iter = self.iter
                    seed_global_rngs(derive_seed(self.seed, SeedStream.TRAIN_STEP, comm.get_rank(), self.iter), cuda=True)
                    self._call_hooks("before_step")
                    self.run_step()
                    self._call_hooks("after_step")
                # Lets after_train tell success (iter == max_iter) from an exception.
                self.iter = loop.iter = self.max_iter
            except Exception:
                logger.exception(f"Exception during training at iteration {self.iter}:")
                raise
            finally:
                self._call_hooks("after_train")
        return dict(self._metrics)

    def _next_batch(self) -> Any:
        if self._data_iter is None:
            self._data_iter = iter(self.data_loader)
        try:
            return next(self._data_iter)
        except StopIteration:
            raise RuntimeError(
                f"the data loader ran out at iteration {self.iter}; the trainer needs an infinite loader "
                f"(e.g. an infinite training sampler) since it runs for max_iter={self.max_iter} steps"
            ) from None

    def run_step(self) -> None:
        """One iteration: data, forward, loss check, backward, ``after_backward`` hooks, clip, step."""
        if not self.model.training:
            raise RuntimeError(
                f"the model is in eval mode at iteration {self.iter}; a hook did not restore model.train()"
            )
        start = time.perf_counter()
        data = self._next_batch()
        data_time = time.perf_counter() - start

        # Skipping a step must leave everything as before it, BatchNorm statistics included.
        buffers = [b.detach().clone() for b in self.model.buffers()] if self.max_nonfinite_steps else None
        with amp_autocast(self.amp, self.device_type, knob="amp"):
            loss_dict = self.model(data)
        if isinstance(loss_dict, torch.Tensor):
            loss_dict = {"total_loss": loss_dict}
        if not isinstance(loss_dict, Mapping) or not loss_dict:
            raise TypeError(
                f"in train mode the model must return a non-empty dict of losses, got {type(loss_dict).__name__}"
            )
        losses = sum(loss_dict.values())
        finite = self._check_and_record_losses(loss_dict, data_time)

        self.optimizer.zero_grad(set_to_none=True)
        if not finite:  # a step skipped under max_nonfinite_steps
            losses.backward()  # so that every rank takes part in DDP's gradient reduction; then dropped
            self.optimizer.zero_grad(set_to_none=True)
            with torch.no_grad():
                for b, saved in zip(self.model.buffers(), buffers or ()):
                    b.copy_(saved)
            return
        if self.grad_scaler is not None:
            self.grad_scaler.scale(losses).backward()
            self.grad_scaler.unscale_(self.optimizer)  # hooks and clipping see the true gradients
        else:
            losses.backward()
        self._call_hooks("after_backward")
        if self.grad_clipper is not None:
            self.grad_clipper([p for g in self.optimizer.param_groups for p in g["params"]])
        if self.grad_scaler is not None:
            self.grad_scaler.step(self.optimizer)  # skipped when fp16 gradients overflowed
            self.grad_scaler.update()
        else:
            self.optimizer.step()

    def _check_and_record_losses(self, loss_dict: Mapping[str, torch.Tensor], data_time: float) -> bool:
        """Put the losses (mean over processes) in the storage; return whether they are all finite.

        A NaN or infinite loss raises ``FloatingPointError``, unless fewer than
        ``max_nonfinite_steps`` steps were skipped so far: then the step is counted
        (``nonfinite_steps`` in the storage, a warning with the values) and skipped (False).
        Runs before backward, so a bad step changes neither the weights nor the optimizer state,
        and the checkpoints on disk are from before it. With several processes the check uses the
        mean over all of them, so every process stops or skips together instead of hanging.
        """
        names = list(loss_dict)
        for k in names:
            if not isinstance(loss_dict[k], torch.Tensor) or loss_dict[k].numel() != 1:
                raise TypeError(f"loss {k!r} must be a scalar tensor, got {loss_dict[k]!r}")
        stacked = torch.stack([loss_dict[k].detach().float().reshape(()) for k in names])
        if comm.get_world_size() > 1:
            dist.all_reduce(stacked)
            stacked /= comm.get_world_size()
        values = dict(zip(names, stacked.cpu().tolist()))
        total = float(sum(values.values()))
        bad = [k for k, v in values.items() if not np.isfinite(v)]
        assert self.storage is not None
        self.storage.put_scalar("data_time", data_time)
        if bad or not np.isfinite(total):
            shown = ", ".join(f"{k}={v}" for k, v in {"total_loss": total, **values}.items())
            what = f"Loss became infinite or NaN at iteration {self.iter}: {shown} (non-finite: {', '.join(bad) or 'total_loss'})"
            if self.nonfinite_steps < self.max_nonfinite_steps:
                self.nonfinite_steps += 1
                self.storage.put_scalar("nonfinite_steps", self.nonfinite_steps, smoothing_hint=False)
                logger.warning(f"{what}. Step skipped ({self.nonfinite_steps} of at most {self.max_nonfinite_steps}, "
                               "train.max_nonfinite_steps): weights, optimizer state and buffers unchanged.")
                return False
            limit = (f" {self.nonfinite_steps} such step(s) were already skipped: the limit "
                     f"train.max_nonfinite_steps={self.max_nonfinite_steps} is reached." if self.max_nonfinite_steps else "")
            raise FloatingPointError(
                f"{what}.{limit} The optimizer did not step, so the weights and saved checkpoints are from before "
                "this iteration."
            )
        self.storage.put_scalar("total_loss", total)
        self.storage.put_scalars(**values)
        return True

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """Iteration, seed, skipped non-finite steps, hook states and the fp16 grad scaler.

        No generator state is needed: every step reseeds from ``(seed, rank, iteration)``.
        """
        state: dict[str, Any] = {"iteration": self.iter, "seed": self.seed, "nonfinite_steps": self.nonfinite_steps}
        hooks = {k: h.state_dict() for k, h in self._hooks.items()}
        state["hooks"] = {k: s for k, s in hooks.items() if s}
        if self.grad_scaler is not None:
            state["grad_scaler"] = self.grad_scaler.state_dict()
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` (hook states matched by hook key); training then continues at
        the saved iteration + 1 (:attr:`start_iter`)."""
        self.iter = int(state["iteration"])
        self.start_iter = self.iter + 1
        if "seed" in state:
            self.seed = int(state["seed"])
        self.nonfinite_steps = int(state.get("nonfinite_steps", 0))
        for key, hook_state in state.get("hooks", {}).items():
            if key in self._hooks:
                self._hooks[key].load_state_dict(hook_state)
            else:
                logger.warning(f"the checkpoint has a state for hook {key!r}, which this trainer does not have; ignored")
        if self.grad_scaler is not None and "grad_scaler" in state:
            self.grad_scaler.load_state_dict(state["grad_scaler"])


def _keyed_hooks(hooks: Mapping[str, Optional[Hook]] | Iterable[Optional[Hook]]) -> dict[str, Hook]:
    """``{key: hook}`` in run order (see the ``hooks`` argument of :class:`Trainer`)."""
    if isinstance(hooks, Mapping):
        pairs = [(str(k), h) for k, h in hooks.items() if h is not None]
    else:
        ordered = sorted((h for h in hooks if h is not None), key=lambda h: getattr(h, "priority", 0))
        keys: list[str] = []
        for h in ordered:
            name = type(h).__qualname__
            keys.append(name if name not in keys else f"{name}#{sum(k.split('#')[0] == name for k in keys)}")
        pairs = list(zip(keys, ordered))
    for key, h in pairs:
        if not isinstance(h, Hook):
            raise TypeError(f"hook {key!r} must be a Hook instance, got {type(h).__name__}")
    return dict(pairs)


def _device_type(model: nn.Module) -> str:
    for t in model.parameters():
        return t.device.type
    return "cpu"
