"""Field types shared by every domain's schemas, and the error body.

Limits are declared here once; they validate requests, appear as
`maxLength`/`pattern` in the OpenAPI document, and word the validation messages.
Request bodies forbid unknown fields: a field the API does not take is refused
(422, naming it), never dropped without a word.
"""

from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import Meta

NO_NUL = r"^[^\x00]*$"
# How a validation message explains a pattern that a field does not explain itself (service.api.validation).
PATTERN_RULES = {NO_NUL: "may not contain NUL characters"}


class ErrorBody(msgspec.Struct):
    body: list[str]


class GenericError(msgspec.Struct):
    """Every error response: `{"errors": {"body": ["..."]}}`."""

    errors: ErrorBody


class Page(msgspec.Struct, forbid_unknown_fields=False):
    """Paging parameters shared by list endpoints."""

    limit: Annotated[int, Meta(ge=1, le=100, description="Items per page (1-100).")] = 20
    offset: Annotated[int, Meta(ge=0, le=100_000, description="Items to skip (0-100000).")] = 0
