"""smtpd checks SMTP AUTH off its event loop: a slow check stalls no other session."""

from __future__ import annotations

import base64
import smtplib
import threading

from aiosmtpd.smtp import AuthResult, LoginPassword

from smtpd.server import _Controller

from .._procs import free_port


class _Handler:
    async def handle_DATA(self, server, session, envelope) -> str:  # noqa: N802
        return "250 OK"


def test_a_slow_password_check_does_not_stall_other_sessions() -> None:
    checking, release = threading.Event(), threading.Event()

    def authenticator(server, session, envelope, mechanism, auth_data) -> AuthResult:
        assert isinstance(auth_data, LoginPassword)
        checking.set()
        release.wait(10)  # an argon2 verification, stretched until the test says so
        return AuthResult(success=auth_data.password == b"right", auth_data="ann")

    port = free_port()
    controller = _Controller(_Handler(), hostname="127.0.0.1", port=port,
                             auth_required=True, auth_require_tls=False,
                             authenticator=authenticator)
    controller.start()
    answers: list[tuple[int, bytes]] = []
    try:
        def log_in() -> None:
            with smtplib.SMTP("127.0.0.1", port, timeout=15) as slow:
                slow.ehlo("slow.test")
                token = base64.b64encode(b"\0ann\0right").decode()
                answers.append(slow.docmd("AUTH", f"PLAIN {token}"))
        first = threading.Thread(target=log_in)
        first.start()
        assert checking.wait(10), "the first session never reached its password check"
        # The first session's check is still running: a second session is served anyway.
        with smtplib.SMTP("127.0.0.1", port, timeout=5) as other:
            assert other.ehlo("other.test")[0] == 250
            assert other.noop()[0] == 250
        assert not answers  # still checking
        release.set()
        first.join(15)
        assert answers and answers[0][0] == 235  # and its answer came in the end
    finally:
        release.set()
        controller.stop()
