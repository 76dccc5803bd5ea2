"""Support for the CLI tests: how to run the real ``fieldsync`` command."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

Run = Callable[..., subprocess.CompletedProcess[str]]


def fieldsync_command() -> list[str]:
    """The installed console script, as a user runs it (else ``python -m fieldsync_cli``)."""
    script = Path(sys.executable).parent / "fieldsync"
    return [str(script)] if script.exists() else [sys.executable, "-m", "fieldsync_cli"]


#: Daemons offer reports at once in tests that are about something else: the field default
#: holds them for minutes (timing privacy, SPEC.md §14.10; its own tests set it).
NO_OFFER_DELAY = {"FIELDSYNC_PRIVACY_OFFER_DELAY_MINUTES": "0"}


def clean_env(**extra: str) -> dict[str, str]:
    """The test process's environment without any FIELDSYNC_* setting, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FIELDSYNC_")}
    env.update(NO_OFFER_DELAY)
    env.update(extra)
    return env
