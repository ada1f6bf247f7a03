"""The tag cloud."""

from __future__ import annotations

from flask import Blueprint, Response

from service.api.endpoint import endpoint, respond
from service.tags import service
from service.tags.schemas import TagsResponse

bp = Blueprint("tags", __name__)


@bp.get("/tags")
@endpoint(
    "Get tags",
    operation_id="GetTags",
    tag="Tags",
    responses={200: TagsResponse},
    description="The 100 most used tags, most used first.",
)
def list_tags() -> Response:
    return respond(service.popular())
