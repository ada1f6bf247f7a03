"""How a route declares itself: `@endpoint(...)` parses and documents in one place.

The decorator is the single source of truth for a route's auth mode, request
body, query parameters and responses: it applies them at run time and leaves
them on the view function for `service.api.openapi` to publish, so the document
cannot drift from what the code does.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import wraps
from typing import Any, Literal, TypeVar, cast

import msgspec
from flask import Response, g, request
from werkzeug.exceptions import RequestEntityTooLarge

from service.api import validation
from service.api.errors import Invalid, NotFound, UnsupportedMediaType
from service.security import auth as authn

F = TypeVar("F", bound=Callable[..., Any])
AuthMode = Literal["required", "optional", "none"]

_encoder = msgspec.json.Encoder()
OPERATION_ID = re.compile(r"[A-Z][a-z]+(?:[A-Z][a-z]*)*")


@dataclass(frozen=True)
class Operation:
    summary: str
    tag: str
    # The stable name client generators turn into a function name (the RealWorld spec's where it has one).
    operation_id: str
    auth: AuthMode = "none"
    body: type | None = None
    query: type | None = None
    # status -> response type (a msgspec Struct) or None for an empty body
    responses: dict[int, type | None] = field(default_factory=dict)
    description: str = ""
    # OpenAPI parameter objects for request headers the view reads itself (e.g. Idempotency-Key).
    headers: tuple[dict[str, Any], ...] = ()
    # status -> {header name: OpenAPI header object} for response headers the view sets (e.g. Link).
    response_headers: dict[int, dict[str, dict[str, Any]]] = field(default_factory=dict)
    # Path parameter name -> description, for those whose URL converter does not describe them.
    path: dict[str, str] = field(default_factory=dict)
    # False for a view that never reaches PostgreSQL: an unavailable database cannot make it answer 503.
    uses_database: bool = True


def endpoint(
    summary: str,
    *,
    tag: str,
    operation_id: str,
    responses: dict[int, type | None],
    auth: AuthMode = "none",
    body: type | None = None,
    query: type | None = None,
    description: str = "",
    headers: tuple[dict[str, Any], ...] = (),
    response_headers: dict[int, dict[str, dict[str, Any]]] | None = None,
    path: dict[str, str] | None = None,
    uses_database: bool = True,
) -> Callable[[F], F]:
    """Declare a view's contract; the view receives `body=` and `query=` already validated.

    `operation_id` is PascalCase and unique in the app (checked when the OpenAPI document is built)."""
    if not OPERATION_ID.fullmatch(operation_id):
        raise ValueError(f"operation_id {operation_id!r} is not PascalCase")
    op = Operation(
        summary,
        tag,
        operation_id,
        auth,
        body,
        query,
        responses,
        description,
        headers,
        response_headers or {},
        path or {},
        uses_database,
    )

    def decorate(fn: F) -> F:
        @wraps(fn)
        def view(*args: Any, **kwargs: Any) -> Any:
            # No slug or username holds a NUL byte (and PostgreSQL refuses one in text).
            if any(isinstance(value, str) and "\x00" in value for value in kwargs.values()):
                raise NotFound()
            if op.query is not None:
                kwargs["query"] = parse_query(op.query)
            if op.body is not None:
                kwargs["body"] = parse_body(op.body)
            return fn(*args, **kwargs)

        wrapped: Any = view
        if auth == "required":
            wrapped = authn.auth_required(view)
        elif auth == "optional":
            wrapped = authn.auth_optional(view)
        wrapped.__openapi__ = op
        return cast(F, wrapped)

    return decorate


_decoders: dict[type, msgspec.json.Decoder[Any]] = {}


def parse_body(kind: type[Any]) -> Any:
    """Decode and validate the JSON body as `kind`; any problem is a 422 (415 when it is not JSON)."""
    decoder = _decoders.get(kind)
    if decoder is None:
        decoder = _decoders[kind] = msgspec.json.Decoder(kind)
    data = request_body()
    if not data:
        raise Invalid("request body is empty; expected a JSON object")
    # A form or text/plain body is what a cross-site HTML form can send without a CORS preflight.
    if not request.is_json:
        raise UnsupportedMediaType()
    try:
        return decoder.decode(data)
    except msgspec.ValidationError as exc:
        raise Invalid(*_every_problem(kind, data, exc)) from exc
    except msgspec.DecodeError as exc:
        raise Invalid(f"malformed JSON: {exc}") from exc
    except RecursionError as exc:
        raise Invalid("malformed JSON: nested too deeply") from exc
    except UnicodeDecodeError as exc:
        raise Invalid("malformed JSON: invalid UTF-8") from exc


def request_body() -> bytes:
    """The raw request body, read once per request and kept; RequestEntityTooLarge (413) past MAX_CONTENT_LENGTH.

    The one reader of bodies, so that whatever reads a body before the view (a rate limit's key)
    sees exactly what the view will parse, whether the body came with Content-Length or chunked."""
    if g.get("_body_too_large"):
        raise RequestEntityTooLarge()
    try:
        # Content-Length framing: werkzeug refuses a length over the maximum and reads exactly the length.
        data = request.get_data(cache=True)
        limit = request.max_content_length
        # Chunked framing (no Content-Length; gunicorn marks the stream terminated): werkzeug stops
        # at the maximum without an error, so a longer body would look cut short. One byte more tells.
        if limit is not None and request.content_length is None and len(data) >= limit and request.input_stream.read(1):
            raise RequestEntityTooLarge()
    except RequestEntityTooLarge:
        g._body_too_large = True
        raise
    return data


def parse_query(kind: type[Any]) -> Any:
    """Convert query parameters to `kind` (strings to ints as declared); problems are 422."""
    args = {key: request.args.get(key) for key in request.args}
    try:
        return msgspec.convert(args, kind, strict=False)
    except msgspec.ValidationError as exc:
        raise Invalid(*(validation.problems(kind, args, lax=True) or [f"invalid query parameter: {exc}"])) from exc


def _every_problem(kind: type[Any], data: bytes, exc: msgspec.ValidationError) -> list[str]:
    """Each problem of a body msgspec refused, worded for people; msgspec's own first one if none is found."""
    # msgspec stops at the first problem, possibly before the rest of the text is seen to be broken.
    try:
        value = msgspec.json.decode(data)
    except msgspec.DecodeError as malformed:
        return [f"malformed JSON: {malformed}"]
    except RecursionError:
        return ["malformed JSON: nested too deeply"]
    return validation.problems(kind, value) or [f"invalid body: {exc}"]


def encode(payload: Any) -> bytes:
    """JSON bytes of `payload` (Structs, dicts, lists)."""
    return _encoder.encode(payload)


def respond(payload: Any, status: int = 200) -> Response:
    """`payload` as the JSON response; bytes are taken as already-encoded JSON."""
    body = payload if isinstance(payload, bytes) else _encoder.encode(payload)
    return Response(body, status=status, mimetype="application/json")


def no_content() -> Response:
    return Response(status=204)
