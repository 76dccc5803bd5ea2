"""Names for peers' network addresses in logs: a pseudonym, never the address (issue #11).

A log on a seized device must not say where its owner met whom. Before a peer has proved
its node key (``synclog.peer_pseudonym`` names it from then on), the only handle on it is
its address, so logs use ``addr-xxxxxxxx``: a keyed hash under a key drawn at random when
the process starts and never written anywhere. The same address keeps its name for the
whole run (an operator can follow one connection through the log); nobody, not even with
the node's own secrets, can test a guessed address against a log. The real address is
logged once per name at DEBUG level only, for an operator who turns that on knowingly.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import secrets

log = logging.getLogger("fieldsync.lognames")

_RUN_KEY = secrets.token_bytes(32)
_PERSON = b"fs-log-address"
#: Names already explained at DEBUG level (bounded: at most this many are remembered).
_EXPLAINED: set[str] = set()
_MAX_EXPLAINED = 4096


def address_name(address: str) -> str:
    """``addr-xxxxxxxx`` for ``address`` (``host:port``, a URL, ...), stable within a run."""
    digest = hashlib.blake2b(
        address.encode("utf-8", "surrogatepass"), digest_size=5, key=_RUN_KEY, person=_PERSON
    ).digest()
    name = "addr-" + base64.b32encode(digest).decode("ascii").lower()
    if log.isEnabledFor(logging.DEBUG) and name not in _EXPLAINED:
        if len(_EXPLAINED) >= _MAX_EXPLAINED:
            _EXPLAINED.clear()
        _EXPLAINED.add(name)
        log.debug("%s is %s", name, address)
    return name
