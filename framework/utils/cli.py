"""Plumbing shared by the command-line tools: user errors as one line with exit code 2, and a
progress loop over images that skips the unreadable ones instead of stopping."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Generic, TypeVar

from framework.errors import InputError

__all__ = ["UsageError", "ImageLoop", "add_traceback_flag", "add_projects_flag", "use_projects_flag", "run_tool"]

logger = logging.getLogger(__name__)

T = TypeVar("T")


class UsageError(InputError):
    """A bad command line or input, for the user to fix: printed as one line, exit code 2."""


def add_traceback_flag(parser: argparse.ArgumentParser) -> None:
    """``--traceback``: show the traceback of a user error (see :func:`run_tool`)."""
    parser.add_argument("--traceback", action="store_true", help="show the full traceback of an error")


def add_projects_flag(parser: argparse.ArgumentParser) -> None:
    """``--projects DIR[:DIR...]`` (repeatable): plugins of other projects folders, for a tool that
    composes configs (see :func:`use_projects_flag`, which :func:`run_tool` calls)."""
    parser.add_argument(
        "--projects", action="append", default=[], metavar="DIR[:DIR...]",
        help="also import the plugins in these projects folders (as $FRAMEWORK_PROJECTS does); the current "
             "directory's projects/ is searched only when named here",
    )


def use_projects_flag(args: argparse.Namespace) -> None:
    """Add the folders of ``args.projects`` (see :func:`add_projects_flag`) to the plugin search,
    before anything is composed; a path that is not a folder raises ConfigError naming it."""
    from framework.config.plugins import add_project_dirs, split_projects_option

    add_project_dirs([f for value in getattr(args, "projects", None) or [] for f in split_projects_option(value)])


def run_tool(run: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """``run(args)`` with INFO logging, after adding the ``--projects`` folders if the tool has the
    flag; a user error (bad input, config, dataset, missing file) is printed as ``error: ...`` and
    gives exit code 2, with the traceback only under ``--traceback``."""
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s %(name)s] %(message)s", datefmt="%H:%M:%S")
    try:
        use_projects_flag(args)
        return run(args)
    except (InputError, FileNotFoundError) as e:
        if getattr(args, "traceback", False):
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2


class ImageLoop(Generic[T]):
    """Iterate over ``items`` with a progress bar, yielding ``(index, item, load(item))``.

    An item whose ``load`` raises one of ``errors`` is logged, left out and kept in ``skipped``:
    one bad file in a folder should not cost the others.
    """

    def __init__(self, items: Sequence[T], load: Callable[[T], Any], *, desc: str,
                 errors: tuple[type[BaseException], ...]) -> None:
        self.items = list(items)
        self.load = load
        self.desc = desc
        self.errors = errors
        self.skipped: list[T] = []

    def __iter__(self) -> Iterator[tuple[int, T, Any]]:
        from tqdm import tqdm
        from tqdm.contrib.logging import logging_redirect_tqdm

        with logging_redirect_tqdm():  # warnings print above the bar instead of breaking it
            for index, item in enumerate(tqdm(self.items, desc=self.desc, unit="img")):
                try:
                    loaded = self.load(item)
                except self.errors as e:
                    logger.warning(f"skipped: {e}")
                    self.skipped.append(item)
                    continue
                yield index, item, loaded

    @property
    def done(self) -> int:
        """Number of items that loaded (once the loop is over)."""
        return len(self.items) - len(self.skipped)

    def skipped_note(self) -> str:
        """``"; skipped N unreadable: a, b"``, or ``""`` when nothing was skipped."""
        return f"; skipped {len(self.skipped)} unreadable: {', '.join(map(str, self.skipped))}" if self.skipped else ""
