"""Every problem in a request, as plain sentences, from the msgspec types that declare it.

msgspec stops at the first problem and words it for programmers (`Expected str matching regex
'^[^\\x00,]*...' - at $.article.tagList[0]`). When it refuses a body or a query, `problems`
walks the same declared type over the undecoded value and says what is wrong with every field,
derived from the `Meta` constraints: `title is required`, `limit must be between 1 and 100`.

A field may word itself through `Meta(extra=...)`: `label` (its name in messages), `rule` (the
sentence for any length or pattern failure) or `pattern` (for pattern failures only). A pattern
without either is explained by `PATTERN_RULES`, or generically.
"""

from __future__ import annotations

import re
from typing import Any

from msgspec import inspect

from service.api.schemas import PATTERN_RULES


def problems(kind: type[Any], value: Any, lax: bool = False) -> list[str]:
    """The problems with `value` as an instance of the Struct `kind`, in field order.

    `lax` reads integers from strings, as query parameters arrive. Empty when none is found."""
    found: list[str] = []
    _check(inspect.type_info(kind), value, "the body", {}, lax, found)
    return found


def _what(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, list):
        return "a list"
    return "an object"


def _check(node: Any, value: Any, name: str, words: dict[str, str], lax: bool, found: list[str]) -> None:
    if isinstance(node, inspect.Metadata):
        extra = node.extra or {}
        words = {**words, **{key: str(text) for key, text in extra.items() if key in ("label", "rule", "pattern")}}
        _check(node.type, value, words.get("label", name), words, lax, found)
    elif isinstance(node, inspect.UnionType):
        options = [t for t in node.types if not isinstance(t, inspect.NoneType)]
        if value is None:
            if len(options) == len(node.types):
                found.append(f"{name} may not be null")
        elif len(options) == 1:
            _check(options[0], value, name, words, lax, found)
        else:  # not used by this API's schemas; say only that it did not fit
            found.append(f"{name} has the wrong type")
    elif isinstance(node, inspect.StructType):
        _struct(node, value, name, lax, found)
    elif isinstance(node, inspect.ListType):
        _list(node, value, name, words, lax, found)
    elif isinstance(node, inspect.StrType):
        _text(node, value, name, words, found)
    elif isinstance(node, inspect.IntType):
        _integer(node, value, name, lax, found)
    elif isinstance(node, inspect.BoolType) and not isinstance(value, bool):
        found.append(f"{name} must be true or false, not {_what(value)}")


def _struct(node: inspect.StructType, value: Any, name: str, lax: bool, found: list[str]) -> None:
    if not isinstance(value, dict):
        found.append(f"{name} must be a JSON object, not {_what(value)}")
        return
    accepted = [field.encode_name for field in node.fields]
    for field in node.fields:
        if field.encode_name in value:
            _check(field.type, value[field.encode_name], field.encode_name, {}, lax, found)
        elif field.required:
            found.append(f"{field.encode_name} is required")
    if node.forbid_unknown_fields:
        for key in value:
            if key not in accepted:
                found.append(f"{key} is not accepted here ({name} takes {', '.join(accepted)})")


def _list(node: inspect.ListType, value: Any, name: str, words: dict[str, str], lax: bool, found: list[str]) -> None:
    if not isinstance(value, list):
        found.append(f"{name} must be a list, not {_what(value)}")
        return
    if node.max_length is not None and len(value) > node.max_length:
        found.append(f"{name} may have at most {node.max_length} items")
        return  # one message for an oversized list, not one per item
    if node.min_length is not None and len(value) < node.min_length:
        found.append(f"{name} must have at least {node.min_length} items")
    item_words = {key: text for key, text in words.items() if key != "label"}
    before = len(found)
    for item in value:
        _check(node.item_type, item, name, item_words, lax, found)
    # The same sentence for several items says nothing new.
    found[before:] = list(dict.fromkeys(found[before:]))


def _text(node: inspect.StrType, value: Any, name: str, words: dict[str, str], found: list[str]) -> None:
    if not isinstance(value, str):
        found.append(f"{name} must be a string, not {_what(value)}")
        return
    if node.min_length is not None and len(value) < node.min_length:
        found.append(f"{name} {words.get('rule') or _shortest(node.min_length)}")
    elif node.max_length is not None and len(value) > node.max_length:
        found.append(f"{name} {words.get('rule') or f'must be at most {node.max_length} characters'}")
    elif node.pattern is not None and not re.search(node.pattern, value):
        rule = words.get("pattern") or words.get("rule") or PATTERN_RULES.get(node.pattern)
        found.append(f"{name} {rule or 'contains characters that are not allowed'}")


def _shortest(length: int) -> str:
    return "may not be empty" if length == 1 else f"must be at least {length} characters"


def _integer(node: inspect.IntType, value: Any, name: str, lax: bool, found: list[str]) -> None:
    if lax and isinstance(value, str):
        try:
            value = int(value)
        except ValueError:
            found.append(f"{name} must be a whole number")
            return
    if isinstance(value, bool) or not isinstance(value, int):
        found.append(f"{name} must be a whole number, not {_what(value)}")
        return
    low = node.ge if node.gt is None else node.gt + 1
    high = node.le if node.lt is None else node.lt - 1
    if (low is not None and value < low) or (high is not None and value > high):
        if low is not None and high is not None:
            found.append(f"{name} must be between {low} and {high}")
        elif low is not None:
            found.append(f"{name} must be at least {low}")
        else:
            found.append(f"{name} must be at most {high}")
