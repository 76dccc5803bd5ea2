"""The ``fieldsync`` program: ``fieldsync_cli.main.main`` with the cyclic garbage collector
kept out of start-up.

A command's modules allocate tens of thousands of objects that live as long as the process
(modules, classes, functions). With collection on, the collector walks them again and again
while they load, and once more as the interpreter shuts down: ~15 % of ``fieldsync status``'s
CPU time (CHANGELOG). So collection is off while the command's modules load;
``LazyGroup.resolve_command`` then freezes what they made (``gc.freeze``: kept, never walked
again) and turns collection back on before the command runs, so a long-running command
(``run``) collects as usual.
"""

from __future__ import annotations

import gc


def run() -> None:
    gc.disable()
    from fieldsync_cli.main import main

    main()
