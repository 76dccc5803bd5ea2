"""What keeps the web app safe to serve: sessions, CSRF tokens, passphrase rate limits.

A session is a random id in a cookie; its CSRF token is an HMAC of the id under a key that
lives in memory only (a restart makes every open page "expired", with what was typed kept).
So reading pages stores nothing: a flood of requests cannot push a monitor's session out.
The table holds only sessions that keep something: after a refused submission, the
attachments already encrypted into the store (their keys, so the monitor need not send them
again). Ending a session (quick exit, expiry, a full table) discards those chunks.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from fieldsync.media import PreparedAttachment
from fieldsync.outbox import OutboxKeys

Clock = Callable[[], float]

#: An idle session ends after this long.
SESSION_IDLE_SECONDS = 30 * 60.0
#: Sessions kept at once (those holding attachments); the least recently used goes first.
MAX_SESSIONS = 256
#: What ``secrets.token_urlsafe(32)`` makes.
_SESSION_ID = re.compile(r"[A-Za-z0-9_-]{43}")


@dataclass
class KeptAttachment:
    """An attachment received with a refused submission, kept for the next attempt."""

    label: str  # shown on the page: the file name as the browser sent it
    size: int
    prepared: PreparedAttachment


@dataclass
class Session:
    sid: str
    csrf: str
    last_seen: float
    kept: list[KeptAttachment] = field(default_factory=list)
    #: The unlocked author's outbox keys (not their signing key): "My reports" shows that
    #: author's reports, and only theirs, until the session ends or idles out.
    outbox: OutboxKeys | None = field(default=None, repr=False)


class Sessions:
    """Session id (cookie) -> ``Session``. ``on_drop`` gets the attachments to discard."""

    def __init__(
        self,
        on_drop: Callable[[list[KeptAttachment]], None],
        clock: Clock = time.monotonic,
        idle_seconds: float = SESSION_IDLE_SECONDS,
        max_sessions: int = MAX_SESSIONS,
    ) -> None:
        self._sessions: OrderedDict[str, Session] = OrderedDict()
        self._secret = secrets.token_bytes(32)
        self._on_drop = on_drop
        self._clock = clock
        self._idle = idle_seconds
        self._max = max_sessions

    def get(self, sid: str | None) -> Session | None:
        """The session of a cookie value; None for a missing or malformed one. A forged id
        gets a session too, but its token is one the forger cannot have put in a form."""
        self._expire()
        if not sid or not _SESSION_ID.fullmatch(sid):
            return None
        session = self._sessions.get(sid)
        if session is None:
            return Session(sid, self._csrf(sid), self._clock())
        session.last_seen = self._clock()
        self._sessions.move_to_end(sid)
        return session

    def new(self) -> Session:
        sid = secrets.token_urlsafe(32)
        return Session(sid, self._csrf(sid), self._clock())

    def remember(self, session: Session) -> None:
        """Keep ``session`` (it holds attachments) until it ends or idles out."""
        if session.sid in self._sessions:
            return
        self._expire()
        while len(self._sessions) >= self._max:
            _, oldest = self._sessions.popitem(last=False)
            self._drop(oldest)
        session.last_seen = self._clock()
        self._sessions[session.sid] = session

    def _csrf(self, sid: str) -> str:
        return hmac.new(self._secret, sid.encode(), hashlib.sha256).hexdigest()

    def end(self, sid: str | None) -> None:
        session = self._sessions.pop(sid, None) if sid else None
        if session is not None:
            self._drop(session)

    def end_all(self) -> None:
        while self._sessions:
            _, session = self._sessions.popitem()
            self._drop(session)

    def _expire(self) -> None:
        limit = self._clock() - self._idle
        while self._sessions:
            sid, session = next(iter(self._sessions.items()))
            if session.last_seen >= limit:
                break
            del self._sessions[sid]
            self._drop(session)

    def _drop(self, session: Session) -> None:
        session.outbox = None
        kept, session.kept = session.kept, []
        if kept:
            self._on_drop(kept)

    def __len__(self) -> int:
        return len(self._sessions)


def csrf_matches(session: Session | None, token: str) -> bool:
    return session is not None and hmac.compare_digest(session.csrf.encode(), token.encode())


@dataclass
class _Failures:
    count: int = 0
    blocked_until: float = 0.0


class PassphraseLimiter:
    """Wrong passphrases: a few free tries per client, then a pause that doubles each time;
    and a cap on wrong passphrases per minute for the whole app (many clients, one key).

    ``allowed`` is asked before the key derivation runs (an attempt while blocked derives
    nothing); ``failed`` and ``succeeded`` record the outcome.
    """

    FREE_TRIES = 5
    FIRST_PAUSE = 30.0
    LONGEST_PAUSE = 3600.0
    GLOBAL_PER_MINUTE = 20
    MAX_CLIENTS = 4096

    def __init__(self, clock: Clock = time.monotonic) -> None:
        self._clock = clock
        self._clients: OrderedDict[str, _Failures] = OrderedDict()
        self._recent: list[float] = []

    def allowed(self, client: str) -> float:
        """0 if ``client`` may try now, else the seconds to wait."""
        now = self._clock()
        self._recent = [t for t in self._recent if t > now - 60.0]
        wait_global = (
            self._recent[0] + 60.0 - now if len(self._recent) >= self.GLOBAL_PER_MINUTE else 0.0
        )
        failures = self._clients.get(client)
        wait_client = 0.0 if failures is None else max(0.0, failures.blocked_until - now)
        return max(wait_global, wait_client)

    def failed(self, client: str) -> None:
        now = self._clock()
        self._recent.append(now)
        failures = self._clients.pop(client, None) or _Failures()
        failures.count += 1
        if failures.count >= self.FREE_TRIES:
            pause = self.FIRST_PAUSE * 2 ** (failures.count - self.FREE_TRIES)
            failures.blocked_until = now + min(pause, self.LONGEST_PAUSE)
        self._clients[client] = failures
        while len(self._clients) > self.MAX_CLIENTS:
            self._clients.popitem(last=False)

    def succeeded(self, client: str) -> None:
        self._clients.pop(client, None)


class RequestLimiter:
    """At most ``per_minute`` requests of one kind per client (a sliding minute)."""

    MAX_CLIENTS = 4096

    def __init__(self, per_minute: int, clock: Clock = time.monotonic) -> None:
        self._per_minute = per_minute
        self._clock = clock
        self._seen: OrderedDict[str, list[float]] = OrderedDict()

    def allow(self, client: str) -> bool:
        now = self._clock()
        times = [t for t in self._seen.pop(client, []) if t > now - 60.0]
        allowed = len(times) < self._per_minute
        if allowed:
            times.append(now)
        self._seen[client] = times
        while len(self._seen) > self.MAX_CLIENTS:
            self._seen.popitem(last=False)
        return allowed
