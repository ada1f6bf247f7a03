"""Settings: the production profile refuses unsafe secrets; env values are parsed strictly."""

from __future__ import annotations

import secrets

import pytest

import config
from config.settings import DEV_SECRET


def production(**env: str) -> dict[str, str]:
    return {"APP_ENV": "production", **env}


def test_production_refuses_to_start_without_a_secret_key() -> None:
    with pytest.raises(config.ConfigError, match="SECRET_KEY"):
        config.load(production())


def test_production_refuses_the_development_default_secret() -> None:
    with pytest.raises(config.ConfigError, match="SECRET_KEY"):
        config.load(production(SECRET_KEY=DEV_SECRET))


def test_production_refuses_a_short_secret() -> None:
    with pytest.raises(config.ConfigError, match="SECRET_KEY"):
        config.load(production(SECRET_KEY="x" * 31))


def test_production_checks_the_secret_after_overrides_are_applied() -> None:
    with pytest.raises(config.ConfigError):
        config.load(production(SECRET_KEY=secrets.token_urlsafe(48)), {"SECRET_KEY": "short"})


def test_production_accepts_a_long_random_secret() -> None:
    secret = secrets.token_urlsafe(36)
    assert len(secret) == 48
    settings = config.load(production(SECRET_KEY=secret))
    assert settings["SECRET_KEY"] == secret
    assert settings["APP_ENV"] == "production"
    assert settings["TESTING"] is False


def test_development_and_testing_profiles_allow_the_default_secret() -> None:
    assert config.load({})["SECRET_KEY"] == DEV_SECRET
    assert config.load({"APP_ENV": "testing"})["TESTING"] is True


def test_an_unknown_profile_is_refused() -> None:
    with pytest.raises(config.ConfigError, match="APP_ENV"):
        config.load({"APP_ENV": "staging"})


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("DB_POOL_SIZE", "ten"),
        ("DB_POOL_SIZE", "1.5"),
        ("DB_MAX_OVERFLOW", "-x"),
        ("JWT_TTL_SECONDS", "7d"),
        ("PASSWORD_HASH_THREADS", "two"),
        ("DB_POOL_TIMEOUT", "soon"),
    ],
)
def test_a_malformed_number_in_the_environment_raises_config_error_naming_it(name: str, value: str) -> None:
    with pytest.raises(config.ConfigError, match=name):
        config.load({"APP_ENV": "testing", name: value})


def test_numeric_environment_values_are_parsed_to_their_types() -> None:
    settings = config.load({"APP_ENV": "testing", "DB_POOL_SIZE": "3", "DB_POOL_TIMEOUT": "0.5"})
    assert settings["DB_POOL_SIZE"] == 3
    assert settings["DB_POOL_TIMEOUT"] == 0.5


def test_redis_url_switches_the_cache_to_redis() -> None:
    assert config.load({"APP_ENV": "testing"})["CACHE_TYPE"] == "SimpleCache"
    settings = config.load({"APP_ENV": "testing", "REDIS_URL": "redis://127.0.0.1:6379/0"})
    assert settings["CACHE_TYPE"] == "RedisCache"
    assert settings["REDIS_URL"] == "redis://127.0.0.1:6379/0"


def test_an_explicit_cache_type_wins_over_redis_url() -> None:
    settings = config.load({"APP_ENV": "testing", "REDIS_URL": "redis://127.0.0.1:6379/0", "CACHE_TYPE": "NullCache"})
    assert settings["CACHE_TYPE"] == "NullCache"


def test_heroku_style_postgres_urls_are_normalised() -> None:
    settings = config.load({"APP_ENV": "testing", "DATABASE_URL": "postgres://u@db:5432/conduit"})
    assert settings["DATABASE_URL"] == "postgresql://u@db:5432/conduit"


@pytest.mark.parametrize(
    ("ttl", "gen_ttl"),
    [("60", "60"), ("60", "30"), ("0", "604800"), ("-1", "604800"), ("60", "0")],
)
def test_generation_counters_that_would_not_outlive_cached_entries_are_refused(ttl: str, gen_ttl: str) -> None:
    env = {"APP_ENV": "testing", "CACHE_DEFAULT_TIMEOUT": ttl, "CACHE_GENERATION_TTL": gen_ttl}
    with pytest.raises(config.ConfigError, match="CACHE_GENERATION_TTL"):
        config.load(env)


def test_create_app_refuses_a_generation_ttl_not_longer_than_the_value_ttl() -> None:
    from service import create_app

    with pytest.raises(config.ConfigError, match=r"CACHE_GENERATION_TTL \(60\) must be .* longer than"):
        create_app({"CACHE_DEFAULT_TIMEOUT": 60, "CACHE_GENERATION_TTL": 60}, env={"APP_ENV": "testing"})


def test_cache_backends_without_a_generation_clock_are_refused() -> None:
    with pytest.raises(config.ConfigError, match="CACHE_TYPE"):
        config.load({"APP_ENV": "testing", "CACHE_TYPE": "FileSystemCache"})


def test_a_longer_generation_ttl_from_the_environment_is_accepted() -> None:
    settings = config.load({"APP_ENV": "testing", "CACHE_GENERATION_TTL": "120"})
    assert settings["CACHE_GENERATION_TTL"] == 120 > settings["CACHE_DEFAULT_TIMEOUT"]
    assert config.load({})["CACHE_GENERATION_TTL"] > config.load({})["CACHE_DEFAULT_TIMEOUT"]


def test_replica_urls_are_postgresql_urls_only() -> None:
    settings = config.load({"DATABASE_REPLICA_URLS": " postgres://r1/conduit , postgresql://r2/conduit,"})
    assert settings["DATABASE_REPLICA_URLS"] == "postgresql://r1/conduit,postgresql://r2/conduit"
    assert config.load({})["DATABASE_REPLICA_URLS"] == ""
    with pytest.raises(config.ConfigError, match="DATABASE_REPLICA_URLS"):
        config.load({"DATABASE_REPLICA_URLS": "sqlite:///var/replica.db"})
