"""The mixed workload of the failover tests: reads, updates, favorites, keyed and un-keyed creates."""

from __future__ import annotations

import random
import threading
import uuid
from typing import TYPE_CHECKING

from tests.loadgen import Client

if TYPE_CHECKING:
    from tests.cluster.conftest import World

READ, UPDATE, FAVORITE, KEYED, PLAIN = (
    "GET read",
    "PUT update",
    "favorite/unfavorite",
    "POST keyed create",
    "POST plain",
)
# What HAProxy may replay (haproxy.cfg: `disable-l7-retry unless ...`), so what a crash must not fail.
REPLAYABLE = (READ, UPDATE, FAVORITE, KEYED)


class Mix:
    """A scenario for tests.loadgen.Load; remembers the outcome of every keyed create."""

    def __init__(self, world: World, tag: str) -> None:
        self.world, self.tag = world, tag
        self.slugs = [slug for slugs in world.articles.values() for slug in slugs]
        self.keyed: list[tuple[str, int, bool]] = []  # (key, status, replayed)
        self._lock = threading.Lock()

    def __call__(self, client: Client, rng: random.Random) -> None:
        name, token = rng.choice(self.world.users)
        slug = rng.choice(self.slugs)
        roll = rng.random()
        if roll < 0.45:
            reads = ["/api/articles?limit=10", "/api/tags", f"/api/profiles/{name}", f"/api/articles/{slug}"]
            path = rng.choice([*reads, f"/api/articles/{slug}/comments"])
            client.request("GET", path, kind=READ, token=token if rng.random() < 0.5 else None, expect={200})
        elif roll < 0.60:
            own = rng.choice(self.world.articles[name])
            body = {"article": {"description": f"updated {rng.random()}"}}
            client.request("PUT", f"/api/articles/{own}", kind=UPDATE, json=body, token=token, expect={200})
        elif roll < 0.75:
            method = rng.choice(["POST", "DELETE"])
            client.request(method, f"/api/articles/{slug}/favorite", kind=FAVORITE, token=token, expect={200})
        elif roll < 0.88:
            key = str(uuid.uuid4())
            article = {"title": f"{self.tag} {key}", "description": "d", "body": "b", "tagList": []}
            resp = client.request(
                "POST",
                "/api/articles",
                kind=KEYED,
                json={"article": article},
                token=token,
                headers={"Idempotency-Key": key},
                expect={201},
            )
            with self._lock:
                self.keyed.append((key, resp.status, resp.headers.get("idempotent-replayed") == "true"))
        else:
            body = {"comment": {"body": f"comment {rng.random()}"}}
            client.request("POST", f"/api/articles/{slug}/comments", kind=PLAIN, json=body, token=token, expect={200})

    def created(self) -> int:
        """Keyed creates acknowledged with 201."""
        with self._lock:
            return sum(1 for _key, status, _replayed in self.keyed if status == 201)
