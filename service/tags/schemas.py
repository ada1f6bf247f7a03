from __future__ import annotations

import msgspec


class TagsResponse(msgspec.Struct):
    tags: list[str]
