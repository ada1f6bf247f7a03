"""How a SQLite migration file is cut into statements (PostgreSQL files run whole)."""

from __future__ import annotations

from service.storage.migrate import split_sqlite


def test_statements_are_cut_at_semicolons_that_end_them() -> None:
    assert split_sqlite("CREATE TABLE a (x INTEGER);\nCREATE TABLE b (y INTEGER); SELECT 1;\n") == [
        "CREATE TABLE a (x INTEGER);",
        "CREATE TABLE b (y INTEGER);",
        "SELECT 1;",
    ]


def test_semicolons_in_literals_comments_and_trigger_bodies_do_not_cut() -> None:
    sql = (
        "-- header; with a semicolon\n"
        "INSERT INTO t VALUES ('a;\nb', \"odd;name\"); /* block; comment */\n"
        "CREATE TRIGGER tr AFTER INSERT ON t BEGIN\n  INSERT INTO u VALUES (1);\n  DELETE FROM v;\nEND;\n"
    )
    assert split_sqlite(sql) == [
        "-- header; with a semicolon\nINSERT INTO t VALUES ('a;\nb', \"odd;name\");",
        "/* block; comment */\nCREATE TRIGGER tr AFTER INSERT ON t BEGIN\n"
        "  INSERT INTO u VALUES (1);\n  DELETE FROM v;\nEND;",
    ]


def test_a_last_statement_without_its_semicolon_is_kept() -> None:
    assert split_sqlite("SELECT 1;\nSELECT 2\n") == ["SELECT 1;", "SELECT 2"]


def test_an_empty_file_has_no_statements() -> None:
    assert split_sqlite("\n  \n") == []
