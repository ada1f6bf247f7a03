"""The servers under test: the service (or the ceiling app) under gunicorn, its environment, migrations.

gunicorn itself is started, awaited and stopped by ops.launcher, like the tests' live servers and
the cluster's replicas; this module adds the benchmark's labels, log files and production profile.
"""

from __future__ import annotations

import os
import secrets
import subprocess
from collections.abc import Sequence
from pathlib import Path

from bench.common import BIN, ROOT, BenchError, log
from ops import launcher
from ops.launcher import free_port


class Server:
    """gunicorn -c gunicorn.conf.py [args] [app] on a free loopback port, its log in the results directory."""

    def __init__(
        self,
        label: str,
        env: dict[str, str],
        log_dir: Path,
        app_uri: str | None = None,
        args: Sequence[str] = (),
    ) -> None:
        self.label = label
        self.args = tuple(args)
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.env = env
        self.app_uri = app_uri
        self.log_path = log_dir / f"gunicorn-{label}.log"
        self.gunicorn: launcher.Gunicorn | None = None

    def start(self) -> None:
        config = " ".join(["gunicorn.conf.py", *self.args, *([self.app_uri] if self.app_uri else [])])
        log(f"starting {self.label} server on {self.base_url} ({config}; log {self.log_path})")
        self.gunicorn = launcher.start(
            self.env, self.port, self.log_path, app=self.app_uri, args=self.args, label=f"{self.label} server"
        )
        try:
            self.gunicorn.wait_healthy(60)
        except launcher.LaunchError as exc:
            raise BenchError(str(exc)) from exc

    def stop(self) -> None:
        server, self.gunicorn = self.gunicorn, None
        if server is None or not server.running():
            return
        server.stop(30)
        log(f"stopped {self.label} server")

    def __enter__(self) -> Server:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def service_env(db_url: str, redis_url: str, workers: int) -> dict[str, str]:
    """The environment of a benchmarked service: production profile, a fresh secret, access log off."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("BIND", "HOST", "PORT", "CACHE_TYPE", "WEB_CONCURRENCY", "ACCESS_LOG", "APP_ENV")
    }
    env.update(
        {
            "APP_ENV": "production",
            "SECRET_KEY": secrets.token_urlsafe(36),  # 48 characters
            "DATABASE_URL": db_url,
            "REDIS_URL": redis_url,
            "WEB_CONCURRENCY": str(workers),
            "ACCESS_LOG": "",
            # One load generator writes as a few users from one address: production limits would
            # turn the write scenarios into 429s. The limiter's own cost is not what is measured.
            "RATELIMIT_ENABLED": "0",
        }
    )
    return env


def migrate(env: dict[str, str]) -> None:
    log("applying migrations (flask --app service db upgrade)")
    proc = subprocess.run(  # noqa: S603 - fixed argv, no shell
        [str(BIN / "flask"), "--app", "service", "db", "upgrade"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise BenchError(f"migrations failed:\n{proc.stdout}{proc.stderr}")
