"""Slugs made from article titles."""

from __future__ import annotations

import re

import pytest

from service.articles.service import SLUG_MAX, slugify


@pytest.mark.parametrize(
    ("title", "slug"),
    [
        ("How to train your dragon", "how-to-train-your-dragon"),
        ("Hello, World!", "hello-world"),
        ("  --Leading and trailing--  ", "leading-and-trailing"),
        ("C++ & Rust: a comparison?", "c-rust-a-comparison"),
        ("multiple   spaces\tand\nnewlines", "multiple-spaces-and-newlines"),
        ("Version 2.0 released", "version-2-0-released"),
        ("ALL CAPS", "all-caps"),
    ],
)
def test_punctuation_and_whitespace_collapse_to_single_hyphens(title: str, slug: str) -> None:
    assert slugify(title) == slug


@pytest.mark.parametrize(
    ("title", "slug"),
    [
        ("Crème brûlée", "creme-brulee"),
        ("Ångström über naïve café", "angstrom-uber-naive-cafe"),
        ("\uff26\uff55\uff4c\uff4c width", "full-width"),
        ("Добрый день and hello", "and-hello"),
    ],
)
def test_accents_are_stripped_and_non_latin_letters_dropped(title: str, slug: str) -> None:
    assert slugify(title) == slug


@pytest.mark.parametrize("title", ["", "   ", "!!!", "日本語", "—"])
def test_a_title_with_nothing_sluggable_becomes_article(title: str) -> None:
    assert slugify(title) == "article"


def test_long_titles_are_capped_without_a_trailing_hyphen() -> None:
    slug = slugify("word " * 100)
    assert len(slug) <= SLUG_MAX
    assert not slug.endswith("-")
    assert slug.startswith("word-word")


def test_the_cap_is_exactly_slug_max_when_no_hyphen_falls_at_the_cut() -> None:
    assert slugify("a" * 500) == "a" * SLUG_MAX


@pytest.mark.parametrize("title", ["Hello, World!", "Crème brûlée", "x" * 300, "a - b - c", "🎉 party 🎉"])
def test_every_slug_is_url_safe(title: str) -> None:
    assert re.fullmatch(r"[a-z0-9]+(?:-[a-z0-9]+)*", slugify(title))
