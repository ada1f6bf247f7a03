"""Cache key families: how a domain names its entries and the generations that version them.

A domain declares a family with `@key_family("<prefix>")` in its own cache_keys.py; the shared
cache (service.caching.cache) turns each key's generations into the versioned key it reads and fills.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
from collections.abc import Callable, Iterable
from typing import ParamSpec

# Part of every key; bumped by any worker that saw Redis fail (see the module doc).
EPOCH = "epoch"
P = ParamSpec("P")
# A key's base and the names of the generations that version it (what `SharedCache.fetch` takes).
Key = tuple[str, list[str]]
# Prefix -> the function that declared it: two families never share a prefix.
_FAMILIES: dict[str, str] = {}


@functools.lru_cache(maxsize=4096)
def _digest(*parts: object) -> str:
    """A short stable name for free-form parts (filter values can be long or odd); the recent ones
    are remembered, as every read of a hot page names it again."""
    return hashlib.blake2b(repr(parts).encode(), digest_size=12).hexdigest()


def key_family(prefix: str) -> Callable[[Callable[P, Iterable[str]]], Callable[P, Key]]:
    """Declare a family of cache keys: `prefix` names it, the decorated function names its generations.

    The function takes what identifies one entry (a slug, filters, a page) and returns the
    generations that version it; the family turns the same arguments into the entry's key:

        @key_family("a")
        def article_key(slug: str) -> list[str]:
            return [article_gen(slug), PROFILES]

        get_cache().fetch(article_key(slug), load)

    A generation is a plain string a domain names (`"lists"`, `f"article:{slug}"`), prefixed with
    the domain so two domains never share one by chance. Change the prefix ("c" -> "c2") when the
    entries change shape, so that replicas of the old and new code never read each other's.
    """
    if not prefix or ":" in prefix:
        raise ValueError(f"a key family prefix is a non-empty name without ':' (got {prefix!r})")

    def declare(generations: Callable[P, Iterable[str]]) -> Callable[P, Key]:
        owner = f"{generations.__module__}.{generations.__qualname__}"
        if _FAMILIES.setdefault(prefix, owner) != owner:
            raise ValueError(f"cache key prefix {prefix!r} of {owner} is taken by {_FAMILIES[prefix]}")
        signature = inspect.signature(generations)

        @functools.wraps(generations)
        def key(*args: P.args, **kwargs: P.kwargs) -> Key:
            parts = signature.bind(*args, **kwargs).args if kwargs else args
            names = list(generations(*args, **kwargs))
            if EPOCH in names:
                raise ValueError(f"{EPOCH!r} is part of every key already; {owner} may not name it")
            return f"{prefix}:{_digest(*parts)}", names

        return key

    return declare


__all__ = ["EPOCH", "Key", "key_family"]
