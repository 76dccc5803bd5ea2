"""Requests the web app must refuse, each with nothing stored; where it listens; HTTPS."""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp

from fieldsync.web.guard import PassphraseLimiter
from fieldsync.web.tls import fingerprint_of_der
from tests.cli.cli_support import clean_env, fieldsync_command
from tests.fieldsync.offline_support import PASSPHRASE, Net, add_reports, snapshot
from tests.web.support import MULTIPART, csrf_of, raw_multipart, report_form, served, url_of


def _client() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


async def _token(http: aiohttp.ClientSession, base: str) -> str:
    async with http.get(base + "/write") as response:
        return csrf_of(await response.text())


async def _unchanged(net: Net, before: object) -> None:
    assert await asyncio.to_thread(snapshot, net.a) == before


async def test_post_without_csrf_token_is_refused_and_keeps_the_text(net: Net) -> None:
    async with served(net.a) as daemon, _client() as http:
        base = url_of(daemon)
        before = await asyncio.to_thread(snapshot, net.a)
        await _token(http, base)  # a session, but the form lacks its token
        form = report_form(
            None,
            PASSPHRASE,
            narrative="kept text",
            attachment_files=("a.jpg", b"x" * 1000, "image/jpeg"),
        )
        async with http.post(base + "/write", data=form, headers={"Origin": base}) as response:
            assert response.status == 403
            assert "kept text" in await response.text()
        await _unchanged(net, before)


async def test_post_from_another_origin_is_refused(net: Net) -> None:
    async with served(net.a) as daemon, _client() as http:
        base = url_of(daemon)
        before = await asyncio.to_thread(snapshot, net.a)
        csrf = await _token(http, base)
        for headers in (
            {"Origin": "http://evil.example"},
            {"Origin": "null"},
            {"Referer": "http://evil.example/page"},
            {"Sec-Fetch-Site": "cross-site"},
        ):
            form = report_form(csrf, PASSPHRASE)
            async with http.post(base + "/write", data=form, headers=headers) as response:
                assert response.status == 403, headers
        await _unchanged(net, before)


async def test_forged_session_cookie_is_refused(net: Net) -> None:
    async with served(net.a) as daemon, _client() as http, aiohttp.ClientSession() as other:
        base = url_of(daemon)
        before = await asyncio.to_thread(snapshot, net.a)
        csrf = await _token(http, base)  # a real token of another session
        form = report_form(csrf, PASSPHRASE)
        async with other.post(
            base + "/write",
            data=form,
            headers={"Origin": base, "Cookie": "fieldsync=forged-session-id"},
        ) as response:
            assert response.status == 403
        await _unchanged(net, before)


async def test_unknown_host_header_is_refused(net: Net) -> None:
    """DNS rebinding: a name that resolves to 127.0.0.1 is still not ours."""
    async with served(net.a) as daemon, _client() as http:
        base = url_of(daemon)
        port = base.rsplit(":", 1)[1]
        async with http.get(base + "/write", headers={"Host": f"evil.example:{port}"}) as response:
            assert response.status == 421
        async with http.get(base + "/write", headers={"Host": f"localhost:{port}"}) as response:
            assert response.status == 200


async def test_oversized_upload_is_refused_and_nothing_is_stored(net: Net) -> None:
    async with served(net.a, **{"web.max_upload_mb": 1}) as daemon, _client() as http:
        base = url_of(daemon)
        before = await asyncio.to_thread(snapshot, net.a)
        csrf = await _token(http, base)
        big = bytes(3 * 1024 * 1024)
        form = report_form(csrf, PASSPHRASE, attachment_files=("big.mp4", big, "video/mp4"))
        async with http.post(base + "/write", data=form, headers={"Origin": base}) as response:
            assert response.status == 413

        async def chunked() -> AsyncIterator[bytes]:
            # No Content-Length: the limit is counted while the body streams.
            boundary = "b0undary"
            yield (
                f'--{boundary}\r\nContent-Disposition: form-data; name="csrf"\r\n\r\n{csrf}\r\n'
                f'--{boundary}\r\nContent-Disposition: form-data; name="attachment_files";'
                ' filename="big.mp4"\r\nContent-Type: video/mp4\r\n\r\n'
            ).encode()
            for _ in range(12):
                yield b"\0" * (256 * 1024)
            yield f"\r\n--{boundary}--\r\n".encode()

        try:
            async with http.post(
                base + "/write",
                data=chunked(),
                headers={"Origin": base, "Content-Type": "multipart/form-data; boundary=b0undary"},
            ) as response:
                assert response.status == 413
        except aiohttp.ClientError:
            pass  # the server may close before the client finished sending: refused too
        await _unchanged(net, before)


async def test_hundred_wrong_passphrases_are_rate_limited_and_unlock_nothing(net: Net) -> None:
    async with served(net.a) as daemon, _client() as http:
        base = url_of(daemon)
        before = await asyncio.to_thread(snapshot, net.a)
        csrf = await _token(http, base)
        statuses = []
        page = ""
        for attempt in range(100):
            form = report_form(csrf, f"wrong guess {attempt}")
            async with http.post(base + "/write", data=form, headers={"Origin": base}) as response:
                statuses.append(response.status)
                page = await response.text()
                assert "wrong guess" not in page  # a passphrase is never sent back
        free = PassphraseLimiter.FREE_TRIES
        assert statuses[:free] == [422] * free
        assert set(statuses[free:]) == {429}
        # First the passphrase limit, then also the submission limit: both keep the form.
        assert "Too many" in page and 'name="narrative"' in page
        # While blocked, even the right passphrase is not tried.
        form = report_form(csrf, PASSPHRASE)
        async with http.post(base + "/write", data=form, headers={"Origin": base}) as response:
            assert response.status == 429
        await _unchanged(net, before)


async def test_path_traversal_in_attachment_name_is_refused(net: Net) -> None:
    async with served(net.a) as daemon, _client() as http:
        base = url_of(daemon)
        before = await asyncio.to_thread(snapshot, net.a)
        csrf = await _token(http, base)
        climb = "/".join(["..", "..", "etc", "cron.d", "x"])  # spelled out: see test_self_contained
        for name in (climb, "/etc/passwd", "..", "a\x01b.jpg"):
            body = raw_multipart(
                [
                    ("csrf", None, csrf.encode()),
                    ("narrative", None, b"A report"),
                    ("categories", None, b"unlawful-killing"),
                    ("occurred_date", None, b"2025-03-01"),
                    ("attachment_files", "fine.jpg", b"first file is fine" * 100),
                    ("attachment_camera", name, b"payload"),
                    ("passphrase", None, PASSPHRASE.encode()),
                ]
            )
            async with http.post(
                base + "/write",
                data=body,
                headers={"Origin": base, "Content-Type": MULTIPART},
            ) as response:
                page = await response.text()
                if "\x01" in name:  # a control character breaks the part's header itself
                    assert response.status == 400, name
                    continue
                assert response.status == 422, name
                assert "may not contain slashes" in page
                assert ">A report</textarea>" in page  # what was typed comes back
        await _unchanged(net, before)

        def written_outside() -> list[Path]:
            return [*net.root.rglob("cron.d"), *net.root.rglob("passwd")]

        assert await asyncio.to_thread(written_outside) == []


async def test_app_listens_on_loopback_only_by_default(net: Net) -> None:
    from fieldsync.config import load_config

    default = await asyncio.to_thread(load_config, None, {}, {})
    assert default.web.listen is not None and default.web.listen.host == "127.0.0.1"
    async with served(net.a) as daemon:
        assert daemon.web is not None and not daemon.web.https
        assert daemon.web.addresses == {"127.0.0.1"}


async def test_no_app_on_relay_nodes_or_the_hub(net: Net) -> None:
    async with served(net.b) as relay:
        assert relay.web is None
        assert (await relay.status())["web"] is None
    async with served(net.a, **{"hub.enabled": True}) as hub:
        assert hub.web is None


def _cli_status(home: Path) -> dict[str, object]:
    result = subprocess.run(
        [*fieldsync_command(), "--home", str(home), "status", "--json"],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=60,
        check=True,
    )
    return json.loads(result.stdout)  # type: ignore[no-any-return]


async def test_https_fingerprint_in_status_is_the_served_certificate(net: Net) -> None:
    """Loopback with ``[web] tls = "always"``: the same HTTPS as on a Wi-Fi address (whose
    test runs the daemon in a network namespace: tests/integration/test_web_netns.py)."""
    async with served(net.a, **{"web.tls": "always"}) as daemon:
        assert daemon.web is not None and daemon.web.https
        port = daemon.web.port
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE

        def served_fingerprint() -> str:
            with (
                socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
                context.wrap_socket(raw) as tls_socket,
            ):
                der = tls_socket.getpeercert(binary_form=True)
            assert der is not None
            return fingerprint_of_der(der)

        served_print = await asyncio.to_thread(served_fingerprint)
        status = await asyncio.to_thread(_cli_status, net.a)
        assert status["web"] == {
            "url": f"https://127.0.0.1:{port}/",
            "https": True,
            "fingerprint": served_print,
        }
        async with (
            _client() as http,
            http.get(f"https://127.0.0.1:{port}/status", ssl=context) as response,
        ):
            assert response.status == 200
            assert served_print in await response.text()
            cookie = response.headers.get("Set-Cookie", "")
            assert "__Host-fieldsync=" in cookie and "Secure" in cookie
            assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
        # Plain HTTP on the HTTPS port gets no page.
        async with _client() as http:
            try:
                async with http.get(f"http://127.0.0.1:{port}/status") as response:
                    assert response.status == 400
            except aiohttp.ClientError:
                pass  # the TLS server closed the connection: no page either


async def test_my_reports_open_only_with_a_passphrase_a_token_and_our_origin(net: Net) -> None:
    """My reports is sealed: without the session's token, from another origin, or with a
    wrong passphrase (rate-limited like the form's) it shows no report; the right
    passphrase shows them."""
    (report_id,) = await asyncio.to_thread(add_reports, net.a, ["kept sealed"])
    async with served(net.a) as daemon, _client() as http:
        base = url_of(daemon)
        async with http.get(base + "/reports") as response:
            page = await response.text()
            assert response.status == 200 and report_id[:8] not in page
            csrf = csrf_of(page)
        refused = [
            ({"passphrase": PASSPHRASE}, {"Origin": base}, 403),  # no token
            ({"csrf": "0" * 64, "passphrase": PASSPHRASE}, {"Origin": base}, 403),
            ({"csrf": csrf, "passphrase": PASSPHRASE}, {"Origin": "http://evil.example"}, 403),
        ]
        for data, headers, status in refused:
            async with http.post(base + "/reports", data=data, headers=headers) as response:
                assert response.status == status
                assert report_id[:8] not in await response.text()
        async with http.get(base + "/reports") as response:
            page = await response.text()
            assert report_id[:8] not in page  # none of those unlocked the session
            csrf = csrf_of(page)
        statuses = []
        for attempt in range(20):
            data = {"csrf": csrf, "passphrase": f"wrong guess {attempt}"}
            async with http.post(
                base + "/reports", data=data, headers={"Origin": base}
            ) as response:
                statuses.append(response.status)
                page = await response.text()
                assert "wrong guess" not in page and report_id[:8] not in page
        free = PassphraseLimiter.FREE_TRIES
        assert statuses[:free] == [422] * free and set(statuses[free:]) == {429}
    async with served(net.a) as daemon, _client() as http:
        base = url_of(daemon)
        async with http.get(base + "/reports") as response:
            csrf = csrf_of(await response.text())
        data = {"csrf": csrf, "passphrase": PASSPHRASE}
        async with http.post(base + "/reports", data=data, headers={"Origin": base}) as response:
            assert response.status == 200 and str(response.url).endswith("/reports")
            assert report_id[:8] in await response.text()
