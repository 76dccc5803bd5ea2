"""The app's Jinja2 templates, compiled in a short-lived child process.

Compiling a template (Jinja2's lexer, parser and code generator, then Python's compiler)
leaves about 0.9 MB of freed memory behind in the daemon, which it keeps (bench/web.py). The
child (``python -m fieldsync.web.template_code DIR``) compiles every template and answers with
Jinja2's own bytecode-cache form of each (marshalled code, about 80 kB for all of them); the
app's environment loads them through ``ChildBytecode``, so the daemon only unmarshals.
Parent and child make their environments with ``environment_options`` and ``prepare``, so
the code matches what the app would have compiled itself. If the child fails, or a
template changed in between (Jinja2 checks each template's source checksum), the app
compiles in-process as before.
"""

from __future__ import annotations

import logging
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import jinja2
from jinja2.bccache import Bucket

log = logging.getLogger(__name__)

TEMPLATES_DIR = Path(__file__).parent / "templates"


def environment_options(directory: Path) -> dict[str, Any]:
    """The keyword arguments of the app's ``jinja2.Environment``."""
    return {
        "loader": jinja2.FileSystemLoader(directory),
        "autoescape": True,
        "auto_reload": False,
        "extensions": ["jinja2.ext.i18n", "jinja2.ext.do"],
        "undefined": jinja2.StrictUndefined,
    }


def prepare(env: jinja2.Environment) -> None:
    """What the environment needs before a template is compiled: the i18n extension's
    newstyle gettext changes the code it generates."""
    env.install_null_translations(newstyle=True)  # type: ignore[attr-defined]


class ChildBytecode(jinja2.BytecodeCache):
    """Templates' bytecode compiled by the child, handed out once each; a template not in
    it (or whose source changed) is compiled by Jinja2 as usual, and not kept here."""

    def __init__(self, compiled: dict[str, bytes]) -> None:
        self.compiled = compiled

    def load_bytecode(self, bucket: Bucket) -> None:
        data = self.compiled.pop(bucket.key, None)
        if data is not None:
            bucket.bytecode_from_string(data)

    def dump_bytecode(self, bucket: Bucket) -> None:
        pass


class _Recorder(jinja2.BytecodeCache):
    """The child's side: keeps what Jinja2 compiled."""

    def __init__(self) -> None:
        self.compiled: dict[str, bytes] = {}

    def load_bytecode(self, bucket: Bucket) -> None:
        pass

    def dump_bytecode(self, bucket: Bucket) -> None:
        self.compiled[bucket.key] = bucket.bytecode_to_string()


def compile_all(directory: Path) -> dict[str, bytes]:
    """Every ``.html`` template under ``directory`` compiled: bucket key -> bytecode."""
    recorder = _Recorder()
    options = environment_options(directory)  # autoescape=True among them
    env = jinja2.Environment(**options, bytecode_cache=recorder)  # noqa: S701
    prepare(env)
    load_all(env)
    return recorder.compiled


def compiled_apart(directory: Path = TEMPLATES_DIR, timeout: float = 60.0) -> dict[str, bytes]:
    """``compile_all(directory)`` run in a child process (blocking); empty if it failed."""
    try:
        result = subprocess.run(  # noqa: S603 - our own module, by the running interpreter
            [sys.executable, "-m", "fieldsync.web.template_code", str(directory)],
            check=True,
            capture_output=True,
            timeout=timeout,
        )
        # Written just now by our own child process, from our own templates.
        answer: dict[str, bytes] = pickle.loads(result.stdout)  # noqa: S301
    except (OSError, subprocess.SubprocessError, pickle.UnpicklingError, EOFError) as exc:
        log.warning("web app: templates compiled in the app itself (%s)", exc)
        return {}
    return answer


def load_all(env: jinja2.Environment) -> None:
    """Load (and cache in ``env``) every ``.html`` template, so no page reads a file."""
    for name in env.list_templates(extensions=["html"]):
        env.get_template(name)


if __name__ == "__main__":  # compiled_apart's child: DIRECTORY
    sys.stdout.buffer.write(pickle.dumps(compile_all(Path(sys.argv[1]))))
