"""Password hashing in the gevent thread pool."""

from __future__ import annotations

import pytest

from service.security.auth import Passwords


def test_a_wrong_password_is_false_and_logs_nothing(capfd: pytest.CaptureFixture[str]) -> None:
    # Found by fuzzing the login: an exception escaping the pool thread made gevent's hub print its
    # traceback, ~10 log lines for every wrong password.
    passwords = Passwords(time_cost=1, memory_kib=8, threads=1)
    stored = passwords.hash("right password")
    assert passwords.verify(stored, "right password")
    assert not passwords.verify(stored, "wrong password")
    assert not passwords.verify("not a hash", "right password")
    assert "Traceback" not in capfd.readouterr().err
