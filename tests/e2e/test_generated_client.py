"""The API document is usable by a client generator: openapi-python-client generates a client
from the live `/api/openapi.json`, and a short scenario runs through it against a live gunicorn
server on a fresh PostgreSQL database (register, write, list, favorite, comment, and an error)."""

from __future__ import annotations

import importlib
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.conftest import scratch_database
from tests.live import live_server

GENERATOR = Path(sys.executable).parent / "openapi-python-client"
GENERATE = ["--path", "openapi.json", "--config", "config.yaml", "--meta", "none", "--fail-on-warning"]
PACKAGE = "conduit_generated_client"
# No post hooks: the generated code is imported, not committed, so it need not be formatted.
CONFIG = f"project_name_override: {PACKAGE}\npackage_name_override: {PACKAGE}\npost_hooks: []\n"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with scratch_database("conduit_client") as url, live_server(url) as base:
        yield base


@pytest.fixture(scope="module")
def generated(server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The client package generated from the live server's document, imported."""
    assert GENERATOR.exists(), "openapi-python-client is missing: run `make test` (requirements-dev.txt)"
    work = tmp_path_factory.mktemp("client")
    with urllib.request.urlopen(server + "/api/openapi.json", timeout=10) as resp:
        (work / "openapi.json").write_bytes(resp.read())
    (work / "config.yaml").write_text(CONFIG)
    result = subprocess.run(
        [GENERATOR, "generate", *GENERATE, "--output-path", PACKAGE],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    sys.path.insert(0, str(work))
    try:
        yield importlib.import_module(PACKAGE)
    finally:
        sys.path.remove(str(work))
        for name in [name for name in sys.modules if name.split(".")[0] == PACKAGE]:
            del sys.modules[name]


def module(package: ModuleType, name: str) -> Any:
    return importlib.import_module(f"{package.__name__}.{name}")


def test_a_generated_client_registers_writes_lists_favorites_and_comments(server: str, generated: Any) -> None:
    models = module(generated, "models")
    api = "api.{}".format
    anonymous = generated.Client(base_url=server, raise_on_unexpected_status=True)
    name = f"gen{time.time_ns() % 10**12}"

    user = module(generated, api("user_and_authentication.create_user")).sync(
        client=anonymous,
        body=models.NewUserRequest(user=models.NewUser(username=name, email=f"{name}@example.com", password="x" * 12)),
    )
    assert isinstance(user, models.UserResponse), user
    assert user.user.username == name
    me = generated.AuthenticatedClient(
        base_url=server, token=user.user.token, prefix="Token", raise_on_unexpected_status=True
    )

    new = models.NewArticle(title="Generated", description="From a client", body="Body", tag_list=[name])
    created = module(generated, api("articles.create_article")).sync(
        client=me, body=models.NewArticleRequest(article=new)
    )
    assert isinstance(created, models.SingleArticleResponse), created
    slug = created.article.slug
    assert created.article.tag_list == [name] and created.article.author.username == name

    listed = module(generated, api("articles.get_articles")).sync(client=anonymous, tag=name, limit=5)
    assert isinstance(listed, models.MultipleArticlesResponse), listed
    assert listed.articles_count == 1 and [a.slug for a in listed.articles] == [slug]

    favorited = module(generated, api("favorites.create_article_favorite")).sync(client=me, slug=slug)
    assert isinstance(favorited, models.SingleArticleResponse), favorited
    assert favorited.article.favorited is True and favorited.article.favorites_count == 1

    comment = module(generated, api("comments.create_article_comment")).sync(
        client=me, slug=slug, body=models.NewCommentRequest(comment=models.NewComment(body="Nice"))
    )
    assert isinstance(comment, models.SingleCommentResponse), comment
    comments = module(generated, api("comments.get_article_comments")).sync(client=anonymous, slug=slug)
    assert isinstance(comments, models.MultipleCommentsResponse), comments
    assert [(c.id, c.body, c.author.username) for c in comments.comments] == [(comment.comment.id, "Nice", name)]

    # Errors come back as the documented GenericError, every problem listed.
    refused = module(generated, api("user_and_authentication.create_user")).sync(
        client=anonymous,
        body=models.NewUserRequest(user=models.NewUser(username="no spaces", email="nope", password="short")),
    )
    assert isinstance(refused, models.GenericError), refused
    assert len(refused.errors.body) == 3, refused.errors.body
