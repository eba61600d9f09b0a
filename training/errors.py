"""Errors a user can cause in a training run, and how the command line reports them.

A user who mistypes a config value, points ``data.data_dir`` at the wrong folder, names a backbone that cannot be
reached, fills the disk or presses Ctrl-C gets one line on stderr that says what to change, and a nonzero exit
status; never a traceback. A traceback is for bugs: every exception not recognised here is re-raised as is.
``--debug`` on the command line, or ``GLIA_DEBUG=1`` in the environment, re-raises the recognised ones too.

Exit statuses: 2 for a config or data problem, 1 for a failed write (disk full), 130 for Ctrl-C (the shell's
convention for SIGINT).
"""

from __future__ import annotations

import errno
import os
import sys
from typing import Callable, Optional, Sequence

from glia_hf.data.errors import IQADataError
from training.config import ConfigError


DEBUG_FLAG = "--debug"
DEBUG_ENV = "GLIA_DEBUG"


class RunError(Exception):
    """A failure of the run that the user can act on; its message is the one line to print.

    Attributes:
        exit_code: the process's exit status when the command line reports it.
    """

    exit_code = 1


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C during a run; the message says what was kept and how to continue.

    Still a ``KeyboardInterrupt``, so that a caller running several trainings in one process (``eval.protocols``)
    stops too instead of going on with the next one as after an ordinary failure.
    """

    exit_code = 130


class DiskFull(RunError):
    """A write failed because the device holding the run directory is full."""

    exit_code = 1


def is_disk_full(error: BaseException) -> bool:
    """Whether ``error`` (or an exception it was raised from) is a write that failed for lack of space.

    ``OSError(ENOSPC)`` is the plain case; ``torch.save`` and safetensors wrap it in their own errors, whose text
    still says "No space left on device" (safetensors) or "file write failed" (torch's zip writer).
    """
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno == errno.ENOSPC:
            return True
        text = str(error)
        if "No space left on device" in text or "file write failed" in text:
            return True
        error = error.__cause__ or error.__context__
    return False


def user_message(error: BaseException) -> Optional[tuple]:
    """``(one line, exit status)`` for an error the user caused, ``None`` for anything else (a bug)."""
    if isinstance(error, (RunError, RunInterrupted)):
        return _one_line(str(error)), error.exit_code
    if isinstance(error, ConfigError):
        return _one_line(f"config error: {error}"), 2
    if isinstance(error, IQADataError):
        return _one_line(f"data error: {error} (check data.dataset, data.data_dir and data.dataset_options)"), 2
    if isinstance(error, KeyboardInterrupt):
        return "interrupted", 130
    if is_disk_full(error):
        return _one_line(f"no space left on device ({error}); free some space or choose another --output.dir"), 1
    return None


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def debug_requested(argv: Sequence[str]) -> bool:
    """``--debug`` among the arguments, or ``GLIA_DEBUG`` set to a true value."""
    return DEBUG_FLAG in argv or os.environ.get(DEBUG_ENV, "").lower() in ("1", "true", "yes", "on")


def run_cli(main: Callable, argv: Optional[Sequence[str]] = None, **kwargs) -> int:
    """Call ``main(argv, **kwargs)``; report a user's error as one line on stderr and return the exit status.

    Unrecognised exceptions propagate (with their traceback), and so does everything under ``--debug``.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = debug_requested(argv)
    try:
        main(argv, **kwargs)
        return 0
    except BaseException as error:  # noqa: B902  (KeyboardInterrupt included on purpose)
        if isinstance(error, SystemExit):
            raise
        reported = None if debug else user_message(error)
        if reported is None:
            raise
    # Printed once the exception and its frames are gone, so that an open progress bar has closed its line.
    message, status = reported
    print(message, file=sys.stderr, flush=True)
    return status


__all__ = ["DiskFull", "RunError", "RunInterrupted", "debug_requested", "is_disk_full", "run_cli", "user_message"]
