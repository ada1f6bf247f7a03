"""ops.launcher, the one way gunicorn is started by the tests, the benchmark and the cluster."""

from __future__ import annotations

import os
import re
import time
import urllib.request
from pathlib import Path

import pytest

from ops import launcher


def _env(tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "APP_ENV": "testing",
        "DATABASE_URL": f"sqlite:///{tmp_path}/launcher.db",
        "REDIS_URL": "",
        "ACCESS_LOG": "",
        "BIND": "0.0.0.0:1",  # the launcher's host and port win over an inherited BIND
    }


def test_a_server_starts_answers_and_stops_gracefully(tmp_path: Path) -> None:
    port, log = launcher.free_port(), tmp_path / "gunicorn.log"
    server = launcher.start(_env(tmp_path), port, log, workers=1)
    with launcher.serving(server, timeout=30):
        assert server.url == f"http://127.0.0.1:{port}" and server.port == port
        with urllib.request.urlopen(server.url + "/healthz", timeout=5) as resp:
            assert resp.status == 200
    assert not server.running()
    assert server.stop() is True  # already stopped: nothing to do
    assert not launcher.healthy(server.url)
    assert "Booting worker" in log.read_text()


def test_the_launcher_serves_another_app_under_the_same_config(tmp_path: Path) -> None:
    server = launcher.start(_env(tmp_path), launcher.free_port(), tmp_path / "ceiling.log", app="bench.ceiling:app")
    with launcher.serving(server, timeout=30), urllib.request.urlopen(server.url + "/anything", timeout=5) as resp:
        assert resp.read().startswith(b'{"ok":true')


def test_a_failed_start_names_the_log(tmp_path: Path) -> None:
    log = tmp_path / "broken.log"
    server = launcher.start(_env(tmp_path), launcher.free_port(), log, app="no_such_module:app", label="broken")
    with pytest.raises(launcher.LaunchError) as failed, launcher.serving(server, timeout=30):
        pass
    message = str(failed.value)
    assert message.splitlines()[0].endswith(f"exited before answering /healthz; see {log}"), message
    assert "no_such_module" in message  # the end of the log comes with it
    assert not server.running()


def test_a_server_that_does_not_answer_in_time_is_stopped_and_named(tmp_path: Path) -> None:
    log = tmp_path / "slow.log"
    server = launcher.start(_env(tmp_path), launcher.free_port(), log, workers=1)
    started = time.monotonic()
    expected = re.escape(f"did not answer within 0 s /healthz; see {log}")
    with pytest.raises(launcher.LaunchError, match=expected), launcher.serving(server, timeout=0):
        pass
    assert not server.running()
    assert time.monotonic() - started < 30
