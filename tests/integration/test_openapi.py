"""The published OpenAPI document covers every route, matches the RealWorld spec's
paths, is internally consistent, and its HTML docs are served without a CDN."""

from __future__ import annotations

import re
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
import yaml
from flask import Flask
from flask.testing import FlaskClient

from tests.conftest import build_app

REALWORLD_SPEC = Path(__file__).resolve().parent.parent / "e2e" / "realworld" / "openapi.yml"
HTTP_METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}
PATH_PARAM = re.compile(r"<(?:\w+:)?(\w+)>")


@pytest.fixture(scope="module")
def docs_app(tmp_path_factory: pytest.TempPathFactory) -> Flask:
    return build_app(f"sqlite:///{tmp_path_factory.mktemp('openapi')}/docs.db")


@pytest.fixture
def docs_client(docs_app: Flask) -> FlaskClient:
    return docs_app.test_client()


@pytest.fixture(scope="module")
def document(docs_app: Flask) -> dict[str, Any]:
    resp = docs_app.test_client().get("/api/openapi.json")
    assert resp.status_code == 200
    assert resp.mimetype == "application/json"
    doc = resp.get_json()
    assert isinstance(doc, dict)
    return doc


def template(flask_rule: str) -> str:
    """`/api/articles/<slug>/comments/<int:comment_id>` -> `/api/articles/{slug}/comments/{comment_id}`."""
    return PATH_PARAM.sub(r"{\1}", flask_rule)


def shape(path: str) -> str:
    """A path template with its parameter names erased: names are not part of the wire contract."""
    return re.sub(r"\{[^}]+\}", "{}", path)


def test_the_document_is_openapi_3_1_json(document: dict[str, Any]) -> None:
    assert document["openapi"] == "3.1.0"
    assert document["info"]["title"]
    assert document["info"]["version"]
    assert isinstance(document["paths"], dict) and document["paths"]
    assert isinstance(document["components"]["schemas"], dict) and document["components"]["schemas"]
    for path, item in document["paths"].items():
        assert path.startswith("/"), path
        assert set(item) <= HTTP_METHODS, (path, set(item))
        for method, operation in item.items():
            assert operation["responses"], (path, method)
            assert all(re.fullmatch(r"[1-5]\d\d", status) for status in operation["responses"]), (path, method)
            assert all("description" in response for response in operation["responses"].values())
            declared = {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}
            assert declared == set(re.findall(r"\{(\w+)\}", path)), (path, method)


def test_operation_ids_are_unique(document: dict[str, Any]) -> None:
    ids = [op["operationId"] for item in document["paths"].values() for op in item.values()]
    assert len(ids) == len(set(ids))


def test_every_route_is_declared_and_published_with_all_its_methods(docs_app: Flask, document: dict[str, Any]) -> None:
    rules = [rule for rule in docs_app.url_map.iter_rules() if rule.endpoint != "docs.static"]
    assert len(rules) >= 20
    for rule in rules:
        view = docs_app.view_functions[rule.endpoint]
        assert hasattr(view, "__openapi__"), f"{rule.endpoint} ({rule.rule}) has no @endpoint declaration"
        methods = {m.lower() for m in (rule.methods or set())} - {"head", "options"}
        published = document["paths"].get(template(rule.rule), {})
        assert methods <= set(published), (rule.rule, methods, set(published))


def test_the_document_publishes_nothing_that_is_not_routed(docs_app: Flask, document: dict[str, Any]) -> None:
    routed = {
        (template(rule.rule), method.lower())
        for rule in docs_app.url_map.iter_rules()
        for method in rule.methods or set()
    }
    published = {(path, method) for path, item in document["paths"].items() for method in item}
    assert published <= routed


def test_every_operation_of_the_realworld_spec_is_in_our_document(document: dict[str, Any]) -> None:
    spec = yaml.safe_load(REALWORLD_SPEC.read_text())
    ours = {(shape(path), method) for path, item in document["paths"].items() for method in item}
    expected = {
        (shape("/api" + path), method)
        for path, item in spec["paths"].items()
        for method in item
        if method in HTTP_METHODS
    }
    assert len(expected) >= 19
    assert expected - ours == set()


def iter_refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from iter_refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from iter_refs(item)


def resolve(document: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), f"external $ref {ref}"
    node: Any = document
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        assert isinstance(node, dict) and part in node, f"unresolved $ref {ref}"
        node = node[part]
    return node


def test_every_ref_resolves_to_a_component(document: dict[str, Any]) -> None:
    refs = set(iter_refs(document))
    assert refs, "the document has no $ref at all"
    for ref in refs:
        assert ref.startswith("#/components/"), ref
        assert isinstance(resolve(document, ref), dict)


def test_every_security_requirement_names_a_declared_scheme(document: dict[str, Any]) -> None:
    schemes = set(document["components"]["securitySchemes"])
    for item in document["paths"].values():
        for operation in item.values():
            for requirement in operation.get("security", []):
                assert set(requirement) <= schemes


class AssetLinks(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("href", "src") and value:
                self.links.append(value)


def test_the_docs_page_loads_every_asset_from_the_service_itself(docs_client: FlaskClient) -> None:
    resp = docs_client.get("/api/docs")
    assert resp.status_code == 200
    assert resp.mimetype == "text/html"
    page = resp.get_data(as_text=True)
    assert "http://" not in page and "https://" not in page and "//cdn" not in page
    parser = AssetLinks()
    parser.feed(page)
    assets = parser.links
    assert any(link.endswith(".css") for link in assets), assets
    assert any(link.endswith(".js") for link in assets), assets
    for link in assets:
        assert link.startswith("/") and not link.startswith("//"), link
        asset = docs_client.get(link)
        assert asset.status_code == 200, link
        assert len(asset.data) > 1000, link
        asset.close()
    # The page points Swagger UI at our own document.
    assert '"/api/openapi.json"' in page


def realworld_operations() -> dict[tuple[str, str], dict[str, Any]]:
    """(path shape under /api, method) -> the RealWorld spec's operation."""
    spec = yaml.safe_load(REALWORLD_SPEC.read_text())
    return {
        (shape("/api" + path), method): operation
        for path, item in spec["paths"].items()
        for method, operation in item.items()
        if method in HTTP_METHODS
    }


def test_shared_operations_carry_the_realworld_specs_operation_ids(document: dict[str, Any]) -> None:
    ours = {(shape(path), method): op for path, item in document["paths"].items() for method, op in item.items()}
    spec = realworld_operations()
    assert len(spec) >= 19
    assert {key: ours[key]["operationId"] for key in spec} == {key: op["operationId"] for key, op in spec.items()}


def test_every_operation_id_is_readable_pascal_case(document: dict[str, Any]) -> None:
    for path, item in document["paths"].items():
        for method, operation in item.items():
            assert re.fullmatch(r"[A-Z][a-z]+(?:[A-Z][a-z]*)*", operation["operationId"]), (path, method)


def test_a_duplicate_operation_id_stops_the_document_from_being_built() -> None:
    from service.api.endpoint import endpoint, respond
    from service.api.openapi import build_document

    app = Flask("dup")
    for name in ("first", "second"):
        view = endpoint("x", tag="Tags", operation_id="GetTags", responses={200: None})(lambda: respond({}))
        app.add_url_rule(f"/{name}", name, view)
    with pytest.raises(ValueError, match="GetTags"):
        build_document(app)


def operation(document: dict[str, Any], operation_id: str) -> dict[str, Any]:
    (found,) = [op for item in document["paths"].values() for op in item.values() if op["operationId"] == operation_id]
    return found


def test_if_match_is_declared_wherever_412_is_published(document: dict[str, Any]) -> None:
    update = operation(document, "UpdateArticle")
    (if_match,) = [p for p in update["parameters"] if p["in"] == "header" and p["name"] == "If-Match"]
    assert if_match["required"] is False
    assert "412" in if_match["description"] and if_match["schema"] == {"type": "string"}
    for item in document["paths"].values():
        for op in item.values():
            headers = {p["name"] for p in op["parameters"] if p["in"] == "header"}
            assert ("412" in op["responses"]) == ("If-Match" in headers), op["operationId"]


def test_403_is_published_only_where_an_owner_check_can_refuse(document: dict[str, Any]) -> None:
    with_403 = {
        op["operationId"] for item in document["paths"].values() for op in item.values() if "403" in op["responses"]
    }
    assert with_403 == {"UpdateArticle", "DeleteArticle", "DeleteArticleComment"}


def test_every_query_parameter_has_a_description_and_a_plain_type(document: dict[str, Any]) -> None:
    seen = 0
    for item in document["paths"].values():
        for op in item.values():
            for param in op["parameters"]:
                if param["in"] != "query":
                    continue
                seen += 1
                assert param.get("description"), (op["operationId"], param["name"])
                assert param["schema"]["type"] in ("string", "integer"), (op["operationId"], param)
                assert "anyOf" not in param["schema"] and "description" not in param["schema"]
    assert seen >= 9
    tag = next(p for p in operation(document, "GetArticles")["parameters"] if p["name"] == "tag")
    assert tag["schema"]["type"] == "string" and tag["schema"]["maxLength"] == 256


def test_operation_groups_are_listed_in_reading_order(document: dict[str, Any]) -> None:
    names = [tag["name"] for tag in document["tags"]]
    assert names[:6] == ["User and Authentication", "Profile", "Articles", "Comments", "Favorites", "Tags"]
    used = {tag for item in document["paths"].values() for op in item.values() for tag in op["tags"]}
    assert used == set(names)
    assert all(tag.get("description") for tag in document["tags"])


def test_every_operation_and_parameter_is_described_and_says_its_security(document: dict[str, Any]) -> None:
    for path, item in document["paths"].items():
        for method, op in item.items():
            assert op.get("description"), (path, method)
            assert "security" in op, (path, method)
            for param in op["parameters"]:
                assert param.get("description"), (path, method, param["name"])


def test_503_is_published_only_where_a_dependency_can_be_unavailable(document: dict[str, Any]) -> None:
    without = {
        op["operationId"] for item in document["paths"].values() for op in item.values() if "503" not in op["responses"]
    }
    assert without == {"GetOpenApiDocument", "GetApiDocumentation", "GetMetrics"}
    # The liveness check never touches the database, but says 503 while the worker shuts down.
    assert operation(document, "GetLiveness")["responses"]["503"]["content"]
