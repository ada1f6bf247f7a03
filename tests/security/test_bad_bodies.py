"""Hostile request bodies on every operation that takes one (OWASP API3, API4, API8).

The bad bodies are generated from the OpenAPI document: for each operation with a body, the
structural attacks (malformed JSON, wrong top-level types, missing or mistyped wrapper, 20,000-deep
nesting), and for each field of a valid example the attacks its published schema rules out (NUL
bytes where the pattern forbids them, lone surrogates, one character past `maxLength`, one item
past `maxItems` and 100,000 items, wrong types, null where not nullable), a non-JSON content type
(415) and a body over MAX_CONTENT_LENGTH (413). Every answer is a 4xx in the error shape, nothing
is stored (every table compared row for row), and the valid example is then accepted, so the
refusals were about the bodies. `tests/integration/test_errors.py` has the hand-picked cases.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from service.api.errors import messages
from tests.conftest import Api, auth
from tests.security.helpers import (
    VALID_BODIES,
    Operation,
    assert_error_shape,
    changed_tables,
    operations,
    schemas,
    snapshot,
)

DEEP = 20_000
# (label, raw body, content type, expected status)
Case = tuple[str, bytes, str, int]
JSON = "application/json"


def dumps(value: Any) -> bytes:
    return json.dumps(value).encode()


def _resolve(schema: dict[str, Any], components: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in schema:
        return dict(components[schema["$ref"].rsplit("/", 1)[1]])
    return schema


def _variants(name: str, schema: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    """Values the field's schema refuses."""
    options = schema.get("anyOf", [schema])
    nullable = any(o.get("type") == "null" for o in options)
    schema = next(o for o in options if o.get("type") != "null")
    if not nullable:
        yield f"{name}=null", None
    if schema.get("type") == "string":
        yield from ((f"{name}={v!r}", v) for v in (5, True, [], {}))
        if "pattern" in schema and not re.search(schema["pattern"], "a\x00b"):
            yield f"{name} with NUL", "a\x00b"
        if "maxLength" in schema:
            yield f"{name} over maxLength", "x" * (schema["maxLength"] + 1)
    elif schema.get("type") == "array":
        yield from ((f"{name}={v!r}", v) for v in ("x", 5, {}, [5], [[]], [None]))
        if "maxItems" in schema:
            yield f"{name} over maxItems", [f"t{i}" for i in range(schema["maxItems"] + 1)]
            yield f"{name} with 100,000 items", [f"t{i}" for i in range(100_000)]
        item = schema.get("items", {})
        if "maxLength" in item:
            yield f"{name} item over maxLength", ["x" * (item["maxLength"] + 1)]
        if "pattern" in item and not re.search(item["pattern"], "a\x00b"):
            yield f"{name} item with NUL", ["a\x00b"]


def bad_bodies(op: Operation, components: dict[str, Any], max_body: int) -> list[Case]:
    assert op.body is not None
    example = VALID_BODIES[op.body]
    ((wrapper, inner),) = example.items()
    cases: list[Case] = [
        (f"raw {raw[:12]!r}", raw, JSON, 422)
        for raw in (b"", b"{", b"not json", b"[]", b"[{}]", b"42", b'"s"', b"null", b"true", b"\xff\xfe", b"\x00")
    ]
    cases += [
        ("wrapper missing", dumps(inner), JSON, 422),
        ("empty object", b"{}", JSON, 422),
        *((f"wrapper={v!r}", dumps({wrapper: v}), JSON, 422) for v in (None, [], "x", 5)),
        ("array of the body", dumps([example]), JSON, 422),
        (f"{DEEP}-deep arrays", b"[" * DEEP + b"]" * DEEP, JSON, 422),
        (f"{DEEP}-deep objects", b'{"a":' * DEEP + b"1" + b"}" * DEEP, JSON, 422),
        (
            f"{DEEP}-deep in a field",
            dumps({wrapper: {**inner, "x": 1}}).replace(b"1}}", b"[" * DEEP + b"]" * DEEP + b"}}"),
            JSON,
            422,
        ),
    ]
    properties = _resolve(components[op.body]["properties"][wrapper], components)["properties"]
    for field in inner:
        for label, value in _variants(field, properties[field]):
            cases.append((label, dumps({wrapper: {**inner, field: value}}), JSON, 422))
        if properties[field].get("type") == "string" or "anyOf" in properties[field]:
            surrogate = dumps({wrapper: {**inner, field: "PLACEHOLDER"}}).replace(b"PLACEHOLDER", b"a\\ud800b")
            cases.append((f"{field} with a lone surrogate", surrogate, JSON, 422))
    valid = dumps(example)
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", ""):
        cases.append((f"content type {content_type!r}", valid, content_type, 415))
    padding = b" " * (max_body + 1 - len(valid))
    cases.append(("body over MAX_CONTENT_LENGTH", valid[:-1] + padding + valid[-1:], JSON, 413))
    return cases


def test_every_body_schema_has_an_example(app: Flask) -> None:
    assert {op.body for op in operations(app) if op.body} == set(VALID_BODIES)


def test_hostile_bodies_are_refused_in_the_error_shape_and_store_nothing(client: FlaskClient, api: Api) -> None:
    app = client.application
    token = api.register("alice")
    slug = api.create_article(token, "Target")["slug"]
    components = schemas(app)
    max_body = app.config["MAX_CONTENT_LENGTH"]
    failures = []
    for op in operations(app):
        if op.body is None:
            continue
        url = op.url(slug=slug)
        headers = auth(token) if op.auth != "none" else {}
        before = snapshot(app)
        for label, data, content_type, status in bad_bodies(op, components, max_body):
            resp = client.open(url, method=op.method, data=data, headers={**headers, "Content-Type": content_type})
            if resp.status_code != status:
                failures.append((op.key, label, resp.status_code, resp.get_data()[:150]))
                continue
            assert_error_shape(resp)
            if status == 415:
                assert assert_error_shape(resp) == [messages.UNSUPPORTED_MEDIA_TYPE]
        assert failures == []
        assert changed_tables(before, snapshot(app)) == [], op.key
        # The example itself is fine: each refusal above was about its body.
        resp = client.open(url, method=op.method, data=dumps(VALID_BODIES[op.body]), headers=headers, content_type=JSON)
        assert resp.status_code in (200, 201), (op.key, resp.get_data())


@pytest.mark.parametrize("content_type", ["application/json; charset=utf-8", "application/vnd.conduit+json"])
def test_json_content_types_with_parameters_or_a_json_suffix_are_accepted(
    client: FlaskClient, content_type: str
) -> None:
    resp = client.post("/api/users", data=dumps(VALID_BODIES["NewUserRequest"]), headers={"Content-Type": content_type})
    assert resp.status_code == 201


def test_registration_refuses_fields_a_user_may_not_set_and_stores_nothing(
    app: Flask, client: FlaskClient, api: Api
) -> None:
    api.register("alice")
    forged = {
        **VALID_BODIES["NewUserRequest"]["user"],
        "id": 1,
        "bio": "set by registration",
        "image": "http://evil.example/x.png",
        "password_hash": "$argon2id$v=19$m=8,t=1,p=1$forged",
        "token": "forged",
        "following": True,
        "tokens_valid_after": 0,
        "created_at": "2000-01-01",
    }
    before = snapshot(app)
    resp = client.post("/api/users", json={"user": forged})
    refused = assert_error_shape(resp)
    assert resp.status_code == 422
    for field in set(forged) - set(VALID_BODIES["NewUserRequest"]["user"]):
        assert any(message.startswith(f"{field} is not accepted") for message in refused), (field, refused)
    assert changed_tables(before, snapshot(app)) == []
    # Without the forged fields the same registration is accepted, and sets only what it may.
    resp = client.post("/api/users", json=VALID_BODIES["NewUserRequest"])
    assert resp.status_code == 201
    user = resp.json["user"]
    assert (user["username"], user["bio"], user["image"]) == ("newbie", None, None)
    after = snapshot(app)
    assert changed_tables(before, after) == ["users"]
    # Alice's row (id 1) is untouched and the new password logs in.
    assert [r for r in after["users"] if "alice" in r] == [r for r in before["users"] if "alice" in r]
    login = {"user": {"email": forged["email"], "password": forged["password"]}}
    assert client.post("/api/users/login", json=login).status_code == 200
