"""Compressed bodies, once: a cached entry's gzip variant is made when the entry is stored.

A list page is ~8.5 KB of JSON and compresses to about a fifth. Compressing it per request would
cost the worker CPU on every hit; storing only the plain body would move five times the bytes
from Redis and to the client. So when an entry is filled (service.caching.cache), its body is
compressed once and stored beside it as `<versioned key>:gz`, with the plain body's ETag in its
header line; a read from a client that accepts gzip and needs the body as stored (anonymous, no
count that moved on) takes that variant in the same round trip, and the fast path
(service.caching.fastpath) sends it as it is with `Content-Encoding: gzip`. Everything else gets
the plain body. Responses that may come either way say `Vary: Accept-Encoding`.
"""

from __future__ import annotations

import gzip

import orjson
from werkzeug.http import generate_etag, parse_accept_header

from service.caching.personalize import split

# Bodies shorter than this are sent as they are (a profile, a short comment page): compressing
# them saves less than the header it adds.
GZIP_MIN = 1024
GZIP_LEVEL = 6
SUFFIX = ":gz"


def compressed(entry: bytes) -> bytes | None:
    """The gzip variant of a stored entry: its leading lines, `{"e": <plain body's ETag>}`, the gzip
    body; None for a body under GZIP_MIN or an entry without a header line."""
    try:
        front, _, body = split(entry)
    except ValueError:
        return None
    if len(body) < GZIP_MIN:
        return None
    header = orjson.dumps({"e": generate_etag(body)})
    return front + header + b"\n" + gzip.compress(body, GZIP_LEVEL, mtime=0)


def etag_of(line: bytes) -> str:
    """The ETag (quoted) of a gzip variant, from its header line: the plain body's, marked `-gz`
    (a strong ETag differs between content codings)."""
    return '"' + str(orjson.loads(line)["e"]) + '-gz"'


def accepts_gzip(accept_encoding: str | None) -> bool:
    """Whether an Accept-Encoding header admits gzip (RFC 9110 12.5.3: a q of 0 refuses it)."""
    value = (accept_encoding or "").lower()  # codings are case-insensitive
    if "gzip" not in value and "*" not in value:
        return False
    if ";" not in value:  # no quality values (what browsers send): a listed gzip or * is accepted
        return "gzip" in (coding.strip() for coding in value.split(",")) or "*" in value
    accepted = parse_accept_header(value)
    return accepted.quality("gzip") > 0
