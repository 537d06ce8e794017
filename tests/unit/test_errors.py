"""errors.os_reason: every OSError gets words, even one raised with neither errno nor text."""

from __future__ import annotations

import errno
import ssl

from mirror_engine.errors import os_reason


def test_an_os_error_is_worded_by_its_strerror_then_its_text() -> None:
    assert os_reason(OSError(errno.ENOENT, "No such file or directory")) == "No such file or directory"
    handshake = ssl.SSLError(1, "[SSL: SSLV3_ALERT_HANDSHAKE_FAILURE] sslv3 alert handshake failure")
    assert os_reason(handshake) == "[SSL: SSLV3_ALERT_HANDSHAKE_FAILURE] sslv3 alert handshake failure"
    assert os_reason(OSError("no route to the proxy")) == "no route to the proxy"


def test_a_silent_reset_is_worded_by_its_kind() -> None:
    # what asyncio's TLS transport raises when a server that wants a client certificate aborts the handshake
    assert os_reason(ConnectionResetError()) == "Connection reset by peer"
    assert os_reason(ConnectionRefusedError()) == "Connection refused"
    assert os_reason(OSError()) == "OSError"
