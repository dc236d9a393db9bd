"""Exceptions with messages a plant engineer can act on: each names the file and the problem."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import NoReturn


class CoopasdError(Exception):
    """Base class of every error the CLI turns into one readable line."""


class ConfigError(CoopasdError):
    """A config file, run config or flag has an unknown key or a bad value."""


class LayoutError(CoopasdError):
    """A data tree does not follow the DCASE 2023 Task 2 layout."""

    def __init__(self, path: Path | str, problem: str) -> None:
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")


class AudioError(CoopasdError):
    """One audio file cannot be used: empty, not audio, truncated, wrong content."""

    def __init__(self, path: Path | str, problem: str) -> None:
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")


class BadClipsError(CoopasdError):
    """Several clips failed to load; lists all of them at once."""

    def __init__(self, errors: list[AudioError]) -> None:
        self.errors = errors
        lines = "\n".join(f"  - {e}" for e in errors)
        super().__init__(f"{len(errors)} bad audio file(s):\n{lines}")


class MetricsError(CoopasdError):
    """Scores or labels do not allow the DCASE metrics to be computed."""


class SubmissionError(CoopasdError):
    """A run directory's submission files are missing, malformed or incomplete."""


class SectionError(CoopasdError):
    """A clip's machine type and section are unknown to the factory model, or cannot be told."""


class RunDirError(CoopasdError):
    """An output directory cannot take this run: not empty, another kind of run, or a finished run without --force."""


class OverwriteError(CoopasdError):
    """A file that must not be replaced silently (a CA, a private key) already exists."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        super().__init__(f"{path}: already exists; pass --force to replace it (what trusts the old one stops working)")


class DetectorError(CoopasdError):
    """A section's normal training clips cannot make a detector (none of the source domain, too few distinct)."""


class ScoreError(CoopasdError):
    """A clip got a score that is not a finite number; it is never written or reported as a verdict."""


class OutputError(CoopasdError):
    """A result file or folder cannot be written (a file where a folder should be, no permission, ...)."""


class Interrupted(CoopasdError):
    """The user stopped a run (Ctrl-C); what was saved and how to go on is in the message. Exit code 130."""

    exit_code = 130

    def exit(self) -> NoReturn:
        """End the process now, its output flushed: a library's threads (Flower's, waiting on Ray actors the
        Ctrl-C killed) may never end, and a normal exit would wait for them."""
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(self.exit_code)
