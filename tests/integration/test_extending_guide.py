"""docs/extending.md stays true: its own code blocks build the bookmarks domain, and it works.

Every fenced block whose info string names a file (```python service/bookmarks/routes.py) is
written into a temporary `service/bookmarks` package (a directory added to `service.__path__`),
its migration is applied, the blueprint is registered the way the guide's `register_api()` line
does, and the three endpoints run on SQLite, PostgreSQL and PostgreSQL with Redis: the cached
list, the per-viewer flag on one shared entry, and its invalidation by a write.
"""

from __future__ import annotations

import re
import secrets
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

import service
from service.storage import migrate
from tests.conftest import Api, auth, count_statements, forget_keys, scratch_database

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "extending.md"
BLOCK = re.compile(r"^```(\w+) (\S+)\n(.*?)^```$", re.MULTILINE | re.DOTALL)
PACKAGE = "service.bookmarks"


def guide_files() -> dict[str, str]:
    """The guide's code blocks tagged with a file path: path -> content."""
    return {path: code for _lang, path, code in BLOCK.findall(GUIDE.read_text())}


def _forget_package() -> None:
    for name in [m for m in sys.modules if m == PACKAGE or m.startswith(PACKAGE + ".")]:
        del sys.modules[name]


@pytest.fixture
def guide_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The guide's files under tmp_path, its package importable as service.bookmarks, its blueprint registered."""
    root = tmp_path / "guide"
    for path, code in guide_files().items():
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(code)
    _forget_package()
    monkeypatch.setattr(service, "__path__", [*service.__path__, str(root / "service")])
    register_api = service.register_api

    def register_api_with_bookmarks(app: Flask) -> None:
        register_api(app)
        from service.bookmarks.routes import bp as bookmarks  # the guide's registration line

        app.register_blueprint(bookmarks, url_prefix=service.API_PREFIX)

    monkeypatch.setattr(service, "register_api", register_api_with_bookmarks)
    yield root
    _forget_package()


def _build(root: Path, database_url: str, **overrides: Any) -> Flask:
    settings = {"DATABASE_URL": database_url, "CACHE_KEY_PREFIX": f"test:{secrets.token_hex(4)}:", **overrides}
    app = service.create_app(settings, env={"APP_ENV": "testing"})
    engine = app.extensions["db"].engine
    migrate.upgrade(engine)
    migration = migrate.Migration(
        "0005_bookmarks", root / f"service/storage/migrations/{engine.dialect.name}/0005_bookmarks.sql"
    )
    with engine.connect().execution_options(write=True) as conn, conn.begin():
        for statement in migration.statements():
            conn.exec_driver_sql(statement)
    return app


@pytest.fixture(params=["sqlite", "postgresql", "postgresql-redis"])
def guide_app(request: pytest.FixtureRequest, guide_package: Path, tmp_path: Path) -> Iterator[Flask]:
    if request.param == "sqlite":
        yield _build(guide_package, f"sqlite:///{tmp_path}/guide.db")
        return
    with scratch_database("conduit_guide") as url:
        if request.param == "postgresql":
            app = _build(guide_package, url)
        else:
            redis_url = request.getfixturevalue("redis_url")
            app = _build(guide_package, url, REDIS_URL=redis_url, CACHE_TYPE="RedisCache")
        try:
            yield app
        finally:
            if app.config["CACHE_TYPE"] == "RedisCache":
                forget_keys(app.config["REDIS_URL"], app.config["CACHE_KEY_PREFIX"])
            for engine in app.extensions["db"].engines:
                engine.dispose()


def bookmarks_of(client: FlaskClient, username: str, token: str | None = None) -> Any:
    resp = client.get(f"/api/profiles/{username}/bookmarks", headers=auth(token) if token else {})
    assert resp.status_code == 200, resp.get_data(as_text=True)
    return resp.json


def test_the_guide_names_every_file_it_asks_for() -> None:
    assert sorted(guide_files()) == [
        "service/bookmarks/__init__.py",
        "service/bookmarks/cache_keys.py",
        "service/bookmarks/repository.py",
        "service/bookmarks/routes.py",
        "service/bookmarks/schemas.py",
        "service/bookmarks/service.py",
        "service/storage/migrations/postgresql/0005_bookmarks.sql",
        "service/storage/migrations/sqlite/0005_bookmarks.sql",
    ]
    assert "from service.bookmarks.routes import bp as bookmarks" in GUIDE.read_text()


def test_the_guides_bookmarks_work_cached_and_per_viewer(guide_app: Flask) -> None:
    api = Api(guide_app.test_client())
    client = api.client
    alice, bob = api.register("alice"), api.register("bob")
    first = api.create_article(alice, "First")["slug"]
    second = api.create_article(alice, "Second")["slug"]

    # Create: 204, idempotent; the usual errors.
    for slug in (first, second, second):
        assert client.post(f"/api/articles/{slug}/bookmark", headers=auth(bob)).status_code == 204
    assert client.post("/api/articles/nope/bookmark", headers=auth(bob)).status_code == 404
    assert client.post(f"/api/articles/{first}/bookmark").status_code == 401
    assert client.get("/api/profiles/nobody/bookmarks").status_code == 404

    # List: newest first, the total, every flag false for an anonymous reader ...
    anonymous = bookmarks_of(client, "bob")
    assert [(b["slug"], b["bookmarked"]) for b in anonymous["bookmarks"]] == [(second, False), (first, False)]
    assert anonymous["bookmarksCount"] == 2
    # ... served from the cache the second time: no SQL at all.
    with count_statements(guide_app) as statements:
        assert bookmarks_of(client, "bob") == anonymous
    assert statements == []

    # The same shared entry, each reader's own flag.
    assert [b["bookmarked"] for b in bookmarks_of(client, "bob", bob)["bookmarks"]] == [True, True]
    assert [b["bookmarked"] for b in bookmarks_of(client, "bob", alice)["bookmarks"]] == [False, False]
    assert client.post(f"/api/articles/{first}/bookmark", headers=auth(alice)).status_code == 204
    assert [b["bookmarked"] for b in bookmarks_of(client, "bob", alice)["bookmarks"]] == [False, True]

    # Delete: 204, idempotent, and the cached list shows it at once (the generation was bumped).
    for _ in range(2):
        assert client.delete(f"/api/articles/{second}/bookmark", headers=auth(bob)).status_code == 204
    after = bookmarks_of(client, "bob")
    assert [b["slug"] for b in after["bookmarks"]] == [first] and after["bookmarksCount"] == 1
    # An article's new title shows too (the list depends on the articles' LISTS generation).
    resp = client.put(f"/api/articles/{first}", json={"article": {"title": "Renamed"}}, headers=auth(alice))
    assert resp.status_code == 200
    assert bookmarks_of(client, "bob")["bookmarks"][0]["title"] == "Renamed"


def test_the_guides_rate_limit_is_a_setting_with_its_declared_defaults(guide_package: Path) -> None:
    production = service.settings({"APP_ENV": "production", "SECRET_KEY": "s" * 48})
    development = service.settings({"APP_ENV": "development"})
    overridden = service.settings({"APP_ENV": "production", "SECRET_KEY": "s" * 48, "RATELIMIT_BOOKMARKS_USER": "off"})
    assert production["RATELIMIT_BOOKMARKS_USER"] == "60/minute;2000/day"
    assert development["RATELIMIT_BOOKMARKS_USER"] == "300/minute;10000/day"
    assert overridden["RATELIMIT_BOOKMARKS_USER"] == "off"


def test_the_guides_routes_are_in_the_openapi_document_with_429(guide_package: Path, tmp_path: Path) -> None:
    app = _build(guide_package, f"sqlite:///{tmp_path}/openapi.db", RATELIMIT_ENABLED=True)
    paths = app.test_client().get("/api/openapi.json").json["paths"]
    assert "429" in paths["/api/articles/{slug}/bookmark"]["post"]["responses"]
    assert "429" not in paths["/api/profiles/{username}/bookmarks"]["get"]["responses"]
