"""Validation errors: every problem of a request, in plain sentences, in the one error shape;
fields the API does not take are refused by name; nothing is stored on a refusal."""

from __future__ import annotations

import re
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.conftest import Api, auth
from tests.integration.helpers import error_messages
from tests.security.helpers import VALID_BODIES, changed_tables, operations, snapshot

PROGRAMMER_TALK = re.compile(r"\\|\$\.|Expected|regex|`|\^\[")


def plain(messages: list[str]) -> list[str]:
    for message in messages:
        assert not PROGRAMMER_TALK.search(message), message
    return messages


def test_a_registration_with_three_problems_gets_three_plain_messages(app: Flask, client: FlaskClient) -> None:
    before = snapshot(app)
    resp = client.post("/api/users", json={"user": {"username": "no spaces!", "email": "nope"}})
    assert plain(error_messages(resp, 422)) == [
        "username must be 1-40 letters, digits, '_' or '-'",
        "email must be an address like name@example.com",
        "password is required",
    ]
    assert changed_tables(before, snapshot(app)) == []


def test_an_article_with_several_problems_lists_each_of_them(app: Flask, client: FlaskClient, api: Api) -> None:
    token = api.register("alice")
    before = snapshot(app)
    article = {"description": 5, "body": "b", "tagList": ["dragons,training", "x" * 65]}
    resp = client.post("/api/articles", json={"article": article}, headers=auth(token))
    assert plain(error_messages(resp, 422)) == [
        "title is required",
        "description must be a string, not a number",
        "tags may not contain commas or be only spaces",
        "tags must be at most 64 characters",
    ]
    assert changed_tables(before, snapshot(app)) == []


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"user": {"email": "a@b.c", "password": "password123", "username": ""}}, "username must be 1-40"),
        ({"user": {"email": "a@b.c", "password": "short", "username": "al"}}, "password must be 8-256 characters"),
        ({"user": {"email": "a@b.c\x00", "password": "password123", "username": "al"}}, "email must be an address"),
        ({"user": None}, "user must be a JSON object, not null"),
        ([], "the body must be a JSON object, not a list"),
    ],
)
def test_each_kind_of_problem_is_told_in_a_sentence(client: FlaskClient, body: Any, expected: str) -> None:
    (message,) = plain(error_messages(client.post("/api/users", json=body), 422))
    assert message.startswith(expected), message


def test_query_parameters_report_every_problem(client: FlaskClient) -> None:
    resp = client.get("/api/articles", query_string={"limit": "0", "offset": "ten", "tag": "a\x00b"})
    assert plain(error_messages(resp, 422)) == [
        "limit must be between 1 and 100",
        "offset must be a whole number",
        "tag may not contain NUL characters",
    ]


def test_tag_list_on_an_update_is_refused_by_name_and_changes_nothing(
    app: Flask, client: FlaskClient, api: Api
) -> None:
    token = api.register("alice")
    slug = api.create_article(token, "Dragons", tags=["dragons"])["slug"]
    before = snapshot(app)
    resp = client.put(
        f"/api/articles/{slug}", json={"article": {"title": "New", "tagList": ["x"]}}, headers=auth(token)
    )
    (message,) = plain(error_messages(resp, 422))
    assert message.startswith("tagList is not accepted here")
    assert changed_tables(before, snapshot(app)) == []
    assert client.get(f"/api/articles/{slug}").json["article"]["tagList"] == ["dragons"]  # type: ignore[index]


def test_every_request_body_refuses_a_field_it_does_not_take(app: Flask, client: FlaskClient, api: Api) -> None:
    token = api.register("alice")
    slug = api.create_article(token, "Target")["slug"]
    bodies = [op for op in operations(app) if op.body]
    assert len(bodies) == len(VALID_BODIES)
    for op in bodies:
        ((wrapper, inner),) = VALID_BODIES[op.body].items()  # type: ignore[index]
        for extra in ({wrapper: {**inner, "surprise": 1}}, {wrapper: inner, "surprise": 1}):
            headers = auth(token) if op.auth != "none" else {}
            resp = client.open(op.url(slug=slug), method=op.method, json=extra, headers=headers)
            assert any("surprise" in m for m in error_messages(resp, 422)), op.key


def test_request_schemas_say_they_take_no_other_fields(app: Flask) -> None:
    from tests.security.helpers import schemas

    components = schemas(app)
    for name in VALID_BODIES:
        assert components[name]["additionalProperties"] is False, name
        (inner,) = components[name]["properties"].values()
        assert components[inner["$ref"].rsplit("/", 1)[1]]["additionalProperties"] is False, name


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            b'{"user": {"username": 5, "x": ' + b"[" * 20_000 + b"]" * 20_000 + b"}}",
            "malformed JSON: nested too deeply",
        ),
        (b'{"user": 5, "rest": [1, 2', "malformed JSON: "),
    ],
)
def test_a_body_refused_before_its_end_is_read_says_what_is_wrong_with_it(
    client: FlaskClient, data: bytes, expected: str
) -> None:
    resp = client.post("/api/users", data=data, content_type="application/json")
    (message,) = error_messages(resp, 422)
    assert message.startswith(expected), message
