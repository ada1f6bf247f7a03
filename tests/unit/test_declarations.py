"""The small APIs a domain declares itself with: cache key families, per-viewer facts, declared settings."""

from __future__ import annotations

import orjson
import pytest
from sqlalchemy import create_engine, text

from config import ConfigError, Declared, flag, resolve
from service.caching import cache
from service.caching.personalize import Fact, personalize, shared


@cache.key_family("unit-pages")
def page_key(owner: str, limit: int, offset: int) -> list[str]:
    return [f"unit:{owner}", "unit-all"]


def test_a_key_family_names_one_entry_per_arguments_with_its_generations() -> None:
    base, gens = page_key("ann", 20, 0)
    assert base.startswith("unit-pages:") and gens == ["unit:ann", "unit-all"]
    assert page_key("ann", 20, 0) == page_key(owner="ann", limit=20, offset=0)
    assert page_key("ann", 20, 20)[0] != base and page_key("bob", 20, 0)[0] != base


def test_a_taken_prefix_and_the_epoch_are_refused() -> None:
    with pytest.raises(ValueError, match="taken"):

        @cache.key_family("unit-pages")
        def other(owner: str) -> list[str]:
            return []

    @cache.key_family("unit-epoch")
    def greedy() -> list[str]:
        return [cache.EPOCH]

    with pytest.raises(ValueError, match="epoch"):
        greedy()


LIKED = Fact(
    "l",
    match="slug",
    field="liked",
    query=text("SELECT item_id AS id FROM likes WHERE user_id = :viewer AND item_id IN :ids"),
)
KNOWN = Fact(
    "k",
    match="name",
    field="known",
    query=text("SELECT person_id AS id FROM knows WHERE user_id = :viewer AND person_id IN :ids"),
)


def test_personalize_sets_each_facts_flag_wherever_the_body_names_an_object_in_one_statement() -> None:
    engine = create_engine("sqlite://")
    with engine.connect() as conn:
        conn.exec_driver_sql("CREATE TABLE likes (user_id INTEGER, item_id INTEGER)")
        conn.exec_driver_sql("CREATE TABLE knows (user_id INTEGER, person_id INTEGER)")
        conn.exec_driver_sql("INSERT INTO likes VALUES (7, 2)")
        conn.exec_driver_sql("INSERT INTO knows VALUES (7, 30)")
        body = {
            "items": [
                {"slug": "one", "liked": False, "by": {"name": "ann", "known": False}},
                {"slug": "two", "liked": False, "by": {"name": "cy", "known": False}},
            ],
            "count": 2,
        }
        entry = shared(body, {LIKED: [("one", 1), ("two", 2)], KNOWN: [("ann", 10), ("cy", 30)]})
        assert personalize(entry, None) == orjson.dumps(body)  # anonymous: the body as stored
        seen = orjson.loads(personalize(entry, 7, [LIKED, KNOWN], conn))
        with pytest.raises(KeyError):  # a fact the caller did not pass would silently stay false
            personalize(entry, 7, [LIKED], conn)
    assert [(i["liked"], i["by"]["known"]) for i in seen["items"]] == [(False, False), (True, True)]


def test_a_declared_setting_comes_from_the_override_then_the_environment_then_the_profiles_default() -> None:
    limit = Declared("X_LIMIT", "1/minute", "9/minute")
    strict = Declared("X_STRICT", True, False, parse=flag)
    assert resolve([limit, strict], {"APP_ENV": "production"}, {}) == {"X_LIMIT": "1/minute", "X_STRICT": True}
    assert resolve([limit, strict], {"APP_ENV": "development"}, {}) == {"X_LIMIT": "9/minute", "X_STRICT": False}
    env = {"X_LIMIT": "off", "X_STRICT": "no"}
    assert resolve([limit, strict], {"APP_ENV": "production"}, env) == {"X_LIMIT": "off", "X_STRICT": False}
    assert resolve([limit], {"APP_ENV": "production", "X_LIMIT": "2/hour"}, env) == {}
    with pytest.raises(ConfigError):
        resolve([strict], {"APP_ENV": "production"}, {"X_STRICT": "maybe"})
    with pytest.raises(ConfigError):
        resolve([limit, Declared("X_LIMIT", "5/minute")], {"APP_ENV": "production"}, {})
