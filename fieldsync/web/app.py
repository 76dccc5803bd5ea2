"""The web app's pages and the rules every request passes (``fieldsync.web.http`` + Jinja2).

Pages: ``/write`` (the report form), ``/reports`` (my reports), ``/status`` (the node),
``/exit`` (quick exit: ends the session, leaves for a neutral page; with ``[privacy]
quick_exit_wipes`` it first wipes the node). Author passphrases typed here are counted as on
the command line (``[security] wipe_after_wrong_passphrases``, ``fieldsync.wrong_passphrases``):
the last wrong one allowed wipes the node, the page says so, and the daemon stops (it holds
keys in memory). Reports are checked,
signed, sealed and stored by the node API (``Node.draft_report``, ``Node.seal_report``) on
the daemon's store thread; attachments stream from the request into encrypted chunk items
(``media.AttachmentStream``), a block at a time: no plaintext file is ever written.

Every request: its Host must be one the app serves (no DNS rebinding); every response
carries a strict CSP (no inline script or style), ``Cache-Control: no-store`` and friends.
Every POST: same Origin, then the session's CSRF token as the form's first field.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2

from fieldsync import heap, media
from fieldsync.errors import FieldsyncError, KeysDestroyed, WrongPassphrase
from fieldsync.forms import node_form
from fieldsync.node import Node
from fieldsync.outbox import outbox_keys
from fieldsync.store import Store
from fieldsync.store_worker import StoreWorker
from fieldsync.web import form_view, http, template_code
from fieldsync.web.form_view import N_, FormValues
from fieldsync.web.guard import (
    KeptAttachment,
    PassphraseLimiter,
    RequestLimiter,
    Session,
    Sessions,
    csrf_matches,
)
from fieldsync.web.http import (
    BadRequest,
    BodyTooLarge,
    Handler,
    HTTPError,
    Part,
    Request,
    Response,
    Router,
    redirect,
)
from fieldsync.web.i18n import SOURCE_LANGUAGE, Language, load_languages, negotiate
from fieldsync_protocol.attachment import check_media_type, check_name
from fieldsync_protocol.errors import RemoteProtocolError
from fieldsync_protocol.form import Form, default_form

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
TEMPLATES = HERE / "templates"
StatusProvider = Callable[[], Awaitable[dict[str, Any]]]

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "Cache-Control": "no-store",
    "Pragma": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",  # "no-referrer" makes Chrome send Origin: null
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "geolocation=(self), camera=(self), microphone=(self)",
}
LANGUAGE_COOKIE = "fieldsync-lang"
#: The longest text field read from a form (the narrative's limit plus room).
MAX_TEXT_FIELD = 512 * 1024
#: Text fields in one form (the form has about twenty).
MAX_TEXT_FIELDS = 200


@dataclass
class WebSettings:
    https: bool
    #: Host header values the app answers to ("127.0.0.1:7343", "localhost:7343", ...).
    allowed_hosts: frozenset[str]
    max_upload_bytes: int
    #: Shown on the status page (None on loopback: plain HTTP).
    fingerprint: str | None = None
    url: str = ""
    #: Listening on every address (0.0.0.0 or ::): any IP literal with this port is ours.
    any_ip_port: int | None = None
    requests_per_minute: int = 240
    submissions_per_minute: int = 60
    #: ``[security] wipe_after_wrong_passphrases``: wrong author passphrases typed in the
    #: app count towards it, with those typed on the command line; 0: nothing is counted.
    wipe_after_wrong_passphrases: int = 0


@dataclass
class _Upload:
    """What one POST /write brought: the form's text, attachments already encrypted."""

    form: FormValues = field(default_factory=FormValues)
    received: list[KeptAttachment] = field(default_factory=list)
    csrf_ok: bool = False
    attachment_problem: str | None = None
    attachment_detail: str = ""
    total: int = 0


@dataclass
class _RequestState:
    session: Session
    new_session: bool
    language: Language
    ended: bool = False


class TooLarge(Exception):
    """A form field passed ``MAX_TEXT_FIELD``: answered as a submission too large."""


class WebApp:
    """The app for one node. ``application()`` reads what the pages need and answers with
    the handler of every request (the rules, then the page)."""

    def __init__(
        self,
        home: Path,
        worker: StoreWorker,
        status: StatusProvider,
        settings: WebSettings,
        clock: Callable[[], float] = time.monotonic,
        on_quick_exit: Callable[[str], Awaitable[None]] | None = None,
        on_wiped: Callable[[str], Awaitable[None]] | None = None,
    ) -> None:
        self.home = home
        #: ``[privacy] quick_exit_wipes``: what the quick exit runs first (the daemon's wipe).
        self.on_quick_exit = on_quick_exit
        #: Told (with the message) once the last wrong passphrase allowed wiped the node: the
        #: daemon stops, as after a quick exit that wipes.
        self.on_wiped = on_wiped
        #: The node was wiped by wrong passphrases typed here: every page says so from then on.
        self.wiped = False
        self.worker = worker
        self.status_provider = status
        self.settings = settings
        self.languages: dict[str, Language] = {}
        self.limiter = PassphraseLimiter(clock)
        self.requests = RequestLimiter(settings.requests_per_minute, clock)
        self.submissions = RequestLimiter(settings.submissions_per_minute, clock)
        self.sessions = Sessions(self._discard_kept, clock)
        #: One key derivation at a time: Argon2id takes 256 MiB ("moderate") per unlock.
        self._unlocking = asyncio.Semaphore(1)
        self._background: set[asyncio.Task[None]] = set()
        self._node: Node | None = None
        #: The network's form (SPEC.md §18) as last read from the store: each write page and
        #: each submission reads it again, so a form HQ publishes shows on the next page.
        self.network_form: Form = default_form()
        #: Per request, while it is handled.
        self._states: dict[int, _RequestState] = {}
        self._templates: jinja2.Environment | None = None
        self._router = Router()
        #: Languages whose locale data is loaded (see ``Language.warm``).
        self._warm = {SOURCE_LANGUAGE}

    def _state(self, request: Request) -> _RequestState:
        return self._states[id(request)]

    # --- set-up -----------------------------------------------------------------------

    async def application(self) -> Handler:
        # Catalogues, locale data, templates and the static directory are read from disk,
        # on threads, so that no page ever reads a file on the event loop: now, except the
        # catalogue and locale data of a language other than the source, read when a page
        # first asks for it (``_attach_session``). Languages and templates are read or
        # compiled in short-lived child processes, the two side by side.
        self.languages, compiled = await asyncio.gather(
            asyncio.to_thread(load_languages),
            asyncio.to_thread(template_code.compiled_apart, TEMPLATES),
        )
        return await asyncio.to_thread(self._build, compiled)

    def _build(self, compiled: dict[str, bytes]) -> Handler:
        options = template_code.environment_options(TEMPLATES)  # autoescape=True among them
        env = jinja2.Environment(  # noqa: S701
            **options, bytecode_cache=template_code.ChildBytecode(compiled)
        )
        template_code.prepare(env)
        template_code.load_all(env)  # from the child's code, cached now
        self._templates = env
        router = self._router
        router.add("GET", "/", self._home)
        router.add("GET", "/write", self.write_page)
        router.add("POST", "/write", self.submit)
        router.add("GET", "/reports", self.reports_page)
        router.add("POST", "/reports", self.unlock_reports)
        router.add("GET", "/status", self.status_page)
        router.add("GET", "/exit", self.quick_exit)
        router.add("GET", "/bye", self.neutral_page)
        router.add_static("/static", http.load_static(HERE / "static"))
        return self._guard

    async def shutdown(self) -> None:
        """After the server stopped: end every session (their kept attachments go)."""
        self.sessions.end_all()
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)

    async def _on_store(self, func: Callable[[Node, Store], Any]) -> Any:
        """Run ``func`` with the node on the daemon's store thread."""

        def call(store: Store) -> Any:
            if self._node is None:
                self._node = Node(self.home, store=store)
            return func(self._node, store)

        return await self.worker.call(call)

    def _discard_kept(self, kept: list[KeptAttachment]) -> None:
        """Sessions ended with attachments of a report never sent: remove their chunks."""
        prepared = [k.prepared for k in kept]
        task = asyncio.get_running_loop().create_task(
            self.worker.call(lambda store: media.discard_chunks(store, prepared))
        )
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # --- the rules every request passes -----------------------------------------------

    async def _guard(self, request: Request) -> Response:
        if not self._host_allowed(request.host.lower()):
            # A name that resolves here but is not ours: DNS rebinding, or a wrong address.
            response = Response.text("unknown host\n", 421)
        elif not self.requests.allow(_client(request)):
            response = Response.text("too many requests; wait a minute\n", 429)
        elif request.method not in ("GET", "HEAD") and not self._same_origin(request):
            response = Response.text("refused: request from another site\n", 403)
        else:
            await self._attach_session(request)
            try:
                if self.wiped and request.path in _PAGES:
                    # Until the daemon has stopped: nothing left to write with or to show.
                    response = self._wiped_page(request)
                else:
                    response = await self._router.handle(request)
            except HTTPError as exc:  # a body too large or malformed for the page reading it
                response = Response.text(f"{exc.text}\n", exc.status)
            except BaseException:
                self._states.pop(id(request), None)
                raise
        self._finish(request, response)
        return response

    def _finish(self, request: Request, response: Response) -> None:
        self._set_cookies(request, response)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)

    def _host_allowed(self, host: str) -> bool:
        if host in self.settings.allowed_hosts:
            return True
        port = self.settings.any_ip_port
        if port is None:
            return False
        name, _, port_text = host.rpartition(":")
        try:
            ipaddress.ip_address(name.strip("[]"))
        except ValueError:
            return False
        return port_text == str(port)

    def _same_origin(self, request: Request) -> bool:
        """A POST must come from our own pages: the browser's Origin (or Referer) says so."""
        if request.headers.get("Sec-Fetch-Site", "same-origin") not in ("same-origin", "none"):
            return False
        ours = f"{'https' if self.settings.https else 'http'}://{request.host}".lower()
        origin = request.headers.get("Origin")
        if origin is not None:
            return origin.lower() == ours
        referer = request.headers.get("Referer")
        if referer is not None:
            return referer.lower().startswith(ours + "/")
        return True  # neither header (an old browser): the CSRF token still decides

    def _from_our_page(self, request: Request) -> bool:
        """A GET that a page of ours (or the monitor, typing the address) started: what a
        quick exit that wipes needs, so that another site's link or image cannot wipe."""
        fetch_site = request.headers.get("Sec-Fetch-Site")
        if fetch_site is not None:
            return fetch_site in ("same-origin", "none")
        ours = f"{'https' if self.settings.https else 'http'}://{request.host}".lower()
        referer = request.headers.get("Referer", "")
        return referer.lower().startswith(ours + "/")

    def _cookie_name(self) -> str:
        return "__Host-fieldsync" if self.settings.https else "fieldsync"

    async def _attach_session(self, request: Request) -> None:
        session = self.sessions.get(request.cookies.get(self._cookie_name()))
        language = self._language(request)
        if language.code not in self._warm:
            await asyncio.to_thread(_warm, language)
            self._warm.add(language.code)
        self._states[id(request)] = _RequestState(
            session or self.sessions.new(), session is None, language
        )

    def _set_cookies(self, request: Request, response: Response) -> None:
        state = self._states.pop(id(request), None)
        if state is not None and state.new_session and not state.ended:
            response.set_cookie(self._cookie_name(), state.session.sid, secure=self.settings.https)
        chosen = request.query.get("lang")
        if chosen in self.languages:
            response.set_cookie(
                LANGUAGE_COOKIE, chosen, secure=self.settings.https, max_age=365 * 24 * 3600
            )

    def _language(self, request: Request) -> Language:
        for choice in (request.query.get("lang"), request.cookies.get(LANGUAGE_COOKIE)):
            if choice in self.languages:
                return self.languages[choice]
        code = negotiate(request.headers.get("Accept-Language", ""), set(self.languages))
        return self.languages.get(code) or self.languages[SOURCE_LANGUAGE]

    # --- rendering --------------------------------------------------------------------

    def render(
        self, request: Request, template: str, context: dict[str, Any], status: int = 200
    ) -> Response:
        language = self._state(request).language
        session = self._state(request).session
        page = {
            "lang": language,
            "languages": sorted(self.languages.values(), key=lambda lang: lang.code),
            "gettext": language.gettext,
            "ngettext": language.ngettext,
            "csrf": session.csrf,
            "path": request.path,
            **context,
        }
        if self._templates is None:
            raise RuntimeError("a page rendered before application() read the templates")
        return Response.html(self._templates.get_template(template).render(page), status)

    # --- pages ------------------------------------------------------------------------

    async def _home(self, request: Request) -> Response:
        return redirect("/write")

    async def write_page(self, request: Request) -> Response:
        self.network_form = await self._on_store(lambda node, _store: node_form(node))
        return self._form(request, FormValues(), {})

    def _form(
        self,
        request: Request,
        form: FormValues,
        errors: dict[str, str],
        details: dict[str, str] | None = None,
        status: int = 200,
        notice: str | None = None,
    ) -> Response:
        language = self._state(request).language
        session = self._state(request).session
        if "language" not in form.values:
            form.add("language", language.code)
        return self.render(
            request,
            "write.html",
            {
                "fields": form_view.fields_for(self.network_form, language.code),
                "form": form,
                "errors": errors,
                "details": details or {},
                "kept": session.kept,
                "notice": notice,
                "title": N_("Write a report"),
            },
            status,
        )

    async def submit(self, request: Request) -> Response:
        client = _client(request)
        length = request.content_length
        if length is not None and length > self.settings.max_upload_bytes:
            return self._too_large(request)
        if request.content_type != "multipart/form-data":
            return Response.text("expected a multipart form\n", 400)
        session = self._state(request).session
        allowed = self.submissions.allow(client)
        try:
            upload = await self._read_upload(request, session, keep_files=allowed)
        except (TooLarge, BodyTooLarge):
            return self._too_large(request)
        except BadRequest as exc:
            return Response.text(f"malformed form: {exc.text}\n", 400)
        form = upload.form
        if not upload.csrf_ok:
            # A forged or expired session: nothing is stored; what was typed comes back.
            state = self._state(request)
            state.session = session = self.sessions.new()
            state.new_session = True
            return self._form(
                request,
                form,
                {"": N_("This page had expired. Check the report and send it again.")},
                status=403,
            )
        if not allowed:
            # Too many submissions from this client: nothing stored, everything typed kept.
            return self._form(
                request,
                form,
                {"": N_("Too many submissions from this device. Wait a minute, then send again.")},
                status=429,
            )
        if upload.attachment_problem is not None:
            await self._discard(upload.received)
            return self._form(
                request,
                form,
                {form_view.ATTACHMENTS_FIELD: upload.attachment_problem},
                {form_view.ATTACHMENTS_FIELD: upload.attachment_detail},
                status=422,
            )
        if upload.received:
            session.kept.extend(upload.received)
            self.sessions.remember(session)
        return await self._seal(request, session, form, client)

    async def _seal(
        self, request: Request, session: Session, form: FormValues, client: str
    ) -> Response:
        self.network_form = await self._on_store(lambda node, _store: node_form(node))
        fields, errors = form_view.read_form(form, self.network_form.category_keys())
        if errors:
            return self._form(request, form, errors, status=422)
        now = time.time()
        try:
            body = await self._on_store(
                lambda node, _store: node.draft_report(fields, now, channel="web-form")
            )
        except FieldsyncError as exc:
            where = form_view.field_of_error(str(exc))
            return self._form(
                request, form, {where: form_view.MESSAGES[where]}, {where: str(exc)}, status=422
            )
        passphrase = form.get("passphrase")
        if not passphrase:
            return self._form(
                request, form, {"passphrase": N_("Enter your passphrase.")}, status=422
            )
        wait = self.limiter.allowed(client)
        if wait:
            minutes = max(1, round(wait / 60))
            return self._form(
                request,
                form,
                {"passphrase": N_("Too many wrong passphrases. Wait and try again.")},
                {"passphrase": str(minutes)},
                status=429,
            )
        async with self._unlocking:
            if self.wiped:  # wiped while this submission waited for its turn
                return self._wiped_page(request)
            try:
                seed = await asyncio.to_thread(self._unlock, passphrase)
            except KeysDestroyed as exc:
                return await self._keys_destroyed(request, exc)
            except WrongPassphrase:
                self.limiter.failed(client)
                return self._form(
                    request, form, {"passphrase": N_("Wrong passphrase.")}, status=422
                )
        self.limiter.succeeded(client)
        # "My reports" next shows this author's reports (and only theirs) without asking
        # again; the session keeps the outbox keys, never the signing key.
        session.outbox = outbox_keys(seed)
        self.sessions.remember(session)
        prepared = [k.prepared for k in session.kept]
        try:
            report_id = await self._on_store(
                lambda node, _store: node.seal_report(body, seed, prepared, now)
            )
        except FieldsyncError as exc:
            where = form_view.field_of_error(str(exc))
            return self._form(
                request, form, {where: form_view.MESSAGES[where]}, {where: str(exc)}, status=422
            )
        session.kept = []
        log.info("web: report %s sealed", report_id)
        return redirect(f"/reports?sealed={report_id}")

    def _unlock(self, passphrase: str) -> bytes:
        """The author seed ``passphrase`` opens (reads a key file: no store), counted as on
        the command line; raises ``KeysDestroyed`` once that count wiped the node."""
        node = Node(
            self.home,
            wipe_after_wrong_passphrases=self.settings.wipe_after_wrong_passphrases,
            in_daemon=True,
        )
        return node.unlock_author(passphrase)

    async def _keys_destroyed(self, request: Request, exc: KeysDestroyed) -> Response:
        """The last wrong passphrase allowed wiped the node: say so, and stop the daemon."""
        self.wiped = True
        if self.on_wiped is not None:
            await self.on_wiped(f"web app: {exc}")  # no address: no log of monitors
        else:
            log.critical("web app: %s", exc)
        return self._wiped_page(request)

    def _wiped_page(self, request: Request) -> Response:
        return self.render(
            request,
            "message.html",
            {
                "title": N_("Every key on this node was destroyed"),
                "message": N_(
                    "Too many wrong passphrases were typed in a row, so this node destroyed"
                    " every key it held, as its settings require. Reports that had not yet"
                    " left this node are lost, and this app has stopped."
                ),
                "advice": N_(
                    "To use this node again, it must be set up again and enrolled at"
                    " headquarters in person."
                ),
            },
            status=410,
        )

    async def _read_upload(
        self, request: Request, session: Session, keep_files: bool = True
    ) -> _Upload:
        upload = _Upload()
        reader = request.multipart(self.settings.max_upload_bytes)
        first = True
        texts = 0
        try:
            while (part := await reader.next()) is not None:
                if first:
                    first = False
                    token = await _read_text(part) if part.name == "csrf" else ""
                    upload.csrf_ok = csrf_matches(session, token)
                    if part.name == "csrf":
                        continue
                if part.filename is None:
                    texts += 1
                    text = await _read_text(part, texts)
                    if part.name in form_view.FIELD_NAMES or part.name == "passphrase":
                        upload.form.add(part.name, text)
                    continue
                if (
                    not keep_files
                    or not upload.csrf_ok
                    or upload.attachment_problem is not None
                    or part.name not in form_view.FILE_FIELDS
                    or not part.filename
                ):
                    await _drain(part, upload, self.settings.max_upload_bytes)
                    continue
                try:
                    check_name(part.filename)
                except RemoteProtocolError as exc:
                    upload.attachment_problem = N_(
                        "A file name may not contain slashes or control characters."
                    )
                    upload.attachment_detail = str(exc)
                    await _drain(part, upload, self.settings.max_upload_bytes)
                    continue
                upload.received.append(await self._receive(part, part.filename, upload))
        except BaseException:
            await self._discard(upload.received)
            raise
        return upload

    async def _receive(self, part: Part, name: str, upload: _Upload) -> KeptAttachment:
        """Stream one file part into encrypted chunk items, a block at a time."""
        now = int(time.time())
        stream: media.AttachmentStream = await self.worker.call(
            lambda store: media.AttachmentStream(store, now)
        )
        media_type = _media_type(part.headers, name)
        pending = bytearray()
        try:
            while True:
                chunk = await part.read_chunk()
                if chunk:
                    _count(upload, len(chunk), self.settings.max_upload_bytes)
                    pending += chunk
                if len(pending) >= media.READ_BLOCK or (not chunk and pending):
                    block = bytes(pending)
                    pending.clear()
                    await self.worker.call(lambda _store, b=block: stream.write(b))  # type: ignore[misc]
                if not chunk:
                    break
            prepared = await self.worker.call(lambda _store: stream.finish(name, media_type))
        except BaseException:
            await self.worker.call(lambda _store: stream.discard())
            raise
        return KeptAttachment(name, prepared.entry.size, prepared)

    async def _discard(self, kept: list[KeptAttachment]) -> None:
        if kept:
            prepared = [k.prepared for k in kept]
            await self.worker.call(lambda store: media.discard_chunks(store, prepared))

    def _too_large(self, request: Request) -> Response:
        return self.render(
            request,
            "message.html",
            {
                "title": N_("Too large"),
                "message": N_("The report and its files are larger than this node accepts."),
                "limit": self._state(request).language.size(self.settings.max_upload_bytes),
            },
            status=413,
        )

    async def reports_page(self, request: Request) -> Response:
        keys = self._state(request).session.outbox
        if keys is None:
            return self._reports_locked(request)

        def overview(node: Node, store: Store) -> tuple[list[Any], int | None]:
            rows = list(reversed(node.own_reports(keys)))
            syncs = [p["last_sync"] for p in store.peers() if isinstance(p["last_sync"], int)]
            return rows, max(syncs, default=None)

        rows, last_sync = await self._on_store(overview)
        return self.render(
            request,
            "reports.html",
            {
                "locked": False,
                "rows": rows,
                "last_sync": last_sync,
                "sealed": request.query.get("sealed"),
                "title": N_("My reports"),
            },
        )

    def _reports_locked(
        self,
        request: Request,
        problem: str | None = None,
        wait_minutes: int | None = None,
        status: int = 200,
    ) -> Response:
        """The passphrase form that opens "My reports": the outbox is sealed to each
        author's key, so nothing of it shows before, and no list of authors either."""
        return self.render(
            request,
            "reports.html",
            {
                "locked": True,
                "errors": {"passphrase": problem} if problem else {},
                "details": {"passphrase": str(wait_minutes)} if wait_minutes else {},
                "title": N_("My reports"),
            },
            status=status,
        )

    async def unlock_reports(self, request: Request) -> Response:
        """POST /reports: the author's passphrase opens their reports for this session."""
        client = _client(request)
        session = self._state(request).session
        form = await request.post()
        token, passphrase = form.get("csrf"), form.get("passphrase")
        if not isinstance(token, str) or not csrf_matches(session, token):
            state = self._state(request)
            state.session = self.sessions.new()
            state.new_session = True
            return self._reports_locked(
                request, N_("This page had expired. Check the report and send it again."), None, 403
            )
        if not isinstance(passphrase, str) or not passphrase:
            return self._reports_locked(request, N_("Enter your passphrase."), None, 422)
        wait = self.limiter.allowed(client)
        if wait:
            minutes = max(1, round(wait / 60))
            return self._reports_locked(
                request, N_("Too many wrong passphrases. Wait and try again."), minutes, 429
            )
        async with self._unlocking:
            if self.wiped:  # wiped while this request waited for its turn
                return self._wiped_page(request)
            try:
                seed = await asyncio.to_thread(self._unlock, passphrase)
            except KeysDestroyed as exc:
                return await self._keys_destroyed(request, exc)
            except WrongPassphrase:
                self.limiter.failed(client)
                return self._reports_locked(request, N_("Wrong passphrase."), None, 422)
        self.limiter.succeeded(client)
        session.outbox = outbox_keys(seed)
        self.sessions.remember(session)
        return redirect("/reports")

    async def status_page(self, request: Request) -> Response:
        node_status = await self._on_store(lambda node, _store: node.status())
        live = await self.status_provider()
        return self.render(
            request,
            "status.html",
            {
                "node": node_status,
                "live": live,
                "web": self.settings,
                "title": N_("Node status"),
            },
        )

    async def quick_exit(self, request: Request) -> Response:
        if self.on_quick_exit is not None and self._from_our_page(request):
            # Before the redirect: the keys are gone when the neutral page shows (tens of ms:
            # key files are overwritten and unlinked; the daemon stops after this response).
            try:
                await self.on_quick_exit("quick exit from the web app")
            except Exception:
                # The monitor must still leave the page at once, whatever the wipe hit.
                log.exception("quick exit: the wipe failed; leaving for the neutral page")
        elif self.on_quick_exit is not None:
            log.warning("quick exit from another site's page (%s): not wiping", _client(request))
        session = self._state(request).session
        self.sessions.end(session.sid)
        self._state(request).ended = True
        leave = redirect("/bye")
        leave.del_cookie(self._cookie_name(), secure=self.settings.https)
        leave.del_cookie(LANGUAGE_COOKIE, secure=self.settings.https)
        leave.headers["Clear-Site-Data"] = '"cache", "cookies", "storage"'
        return leave

    async def neutral_page(self, request: Request) -> Response:
        self._state(request).ended = True
        return Response.html(
            "<!doctype html><html lang=en><head><meta charset=utf-8>"
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            "<title>Welcome</title></head><body><h1>It works!</h1>"
            "<p>This is the default web page for this server.</p></body></html>"
        )


def _warm(language: Language) -> None:
    """Read a language on its first use (blocking): its catalogue and locale data come from
    a child process; the freed memory of reading them is given back, as at start."""
    language.warm()
    heap.release_free_memory()


#: The pages that show the wiped message once the node was wiped (quick exit still leaves).
_PAGES = frozenset({"/", "/write", "/reports", "/status"})


def _client(request: Request) -> str:
    return request.remote or "unknown"


def _count(upload: _Upload, size: int, limit: int) -> None:
    upload.total += size
    if upload.total > limit:
        raise TooLarge


async def _read_text(part: Part, position: int = 1) -> str:
    if position > MAX_TEXT_FIELDS:
        raise BadRequest("too many fields")
    data = bytearray()
    while chunk := await part.read_chunk():
        data += chunk
        if len(data) > MAX_TEXT_FIELD:
            raise TooLarge
    return data.decode("utf-8", errors="replace")


async def _drain(part: Part, upload: _Upload, limit: int) -> None:
    """Read a part we will not keep (counted against the limit, stored nowhere)."""
    while chunk := await part.read_chunk():
        _count(upload, len(chunk), limit)


def _media_type(headers: Mapping[str, str], name: str) -> str:
    # ``headers``: a part's, names in lower case.
    """The type the browser sent if the protocol accepts it, else one guessed from the name."""
    sent = headers.get("content-type", "").split(";")[0].strip().lower()
    if sent and sent != media.FALLBACK_MEDIA_TYPE:
        try:
            return check_media_type(sent)
        except RemoteProtocolError:
            pass
    return media.media_type_of(Path(name))
