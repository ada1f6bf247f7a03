-- Maintained counts for articlesCount and the tag cloud. Keep in step with ../sqlite/0005_maintained_counts.sql.
-- A read of a total or of the most used tags looks up a few counter rows instead of counting every
-- matching row. Triggers keep the counters in the transaction of the write that changes the rows, so
-- every writer counts: the API, the foreign-key cascades of an article's or a user's deletion, the
-- previous release's replicas during a rolling deploy, and SQL typed by hand. TRUNCATE fires no row
-- triggers: truncate the counter tables with the counted ones.
--
-- article_counts scopes: 'all' (every article), 'author:<user id>' (articles by that user),
-- 'favorited:<user id>' (articles that user favorited). A feed's total is the SUM over the 'author:'
-- rows of the followed users. A row may hold 0; a missing row means 0.
-- No CHECK (n >= 0): SQLite checks it on the row an upsert proposes (n = -1) before it sees the
-- conflict, and a counter that went wrong must not make deleting an article fail.
CREATE TABLE article_counts (
    scope TEXT PRIMARY KEY,
    n BIGINT NOT NULL
);
-- Articles per tag; the tag cloud reads the top of the index on (n DESC, tag), ties by name.
CREATE TABLE tag_counts (
    tag TEXT PRIMARY KEY,
    n BIGINT NOT NULL
);
CREATE INDEX tag_counts_popular_idx ON tag_counts (n DESC, tag);

-- When the counters are written: at COMMIT. Every counting trigger is a constraint trigger, DEFERRABLE
-- INITIALLY DEFERRED, so a counter row is locked only from the moment its transaction commits until
-- the commit is done, not for the rest of the transaction: every article create touches 'all', and a
-- create that held it while it went on to write its tags and its Idempotency-Key made every other
-- create wait (measured: creates cancelled by the 5 s statement timeout behind PgBouncer under load).
-- Lock order, so that counter updates cannot deadlock: deferred events fire in the order they were
-- queued, so an article's own counters ('all', then 'author:<id>', one statement in sorted order) come
-- before the tag and 'favorited:' counters of its tags and of the cascades of its deletion (the
-- cascades run at the end of the DELETE statement, after the article's own event was queued); two
-- article writes meet on 'all' first. A favorite or unfavorite takes its article's row first, as a
-- delete does, then one counter only (LOCK_ARTICLE in service/articles/repository.py).
--
-- Statements inside a function body share a line: the migration runner splits a file at every
-- semicolon that ends a line (service/storage/migrate.py).
-- Each trigger passes its delta (+1 on INSERT, -1 on DELETE) as the function's argument.
CREATE FUNCTION count_article() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO article_counts AS c (scope, n)
    VALUES ('all', TG_ARGV[0]::BIGINT), ('author:' || COALESCE(NEW.author_id, OLD.author_id), TG_ARGV[0]::BIGINT)
    ON CONFLICT (scope) DO UPDATE SET n = c.n + excluded.n; RETURN COALESCE(NEW, OLD); END
$$;
CREATE CONSTRAINT TRIGGER articles_counted_insert AFTER INSERT ON articles
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION count_article(1);
CREATE CONSTRAINT TRIGGER articles_counted_delete AFTER DELETE ON articles
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION count_article('-1');

CREATE FUNCTION count_favorite() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO article_counts AS c (scope, n)
    VALUES ('favorited:' || COALESCE(NEW.user_id, OLD.user_id), TG_ARGV[0]::BIGINT)
    ON CONFLICT (scope) DO UPDATE SET n = c.n + excluded.n; RETURN NULL; END
$$;
CREATE CONSTRAINT TRIGGER favorites_counted_insert AFTER INSERT ON favorites
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION count_favorite(1);
CREATE CONSTRAINT TRIGGER favorites_counted_delete AFTER DELETE ON favorites
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION count_favorite('-1');

CREATE FUNCTION count_article_tag() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO tag_counts AS c (tag, n) VALUES (COALESCE(NEW.tag, OLD.tag), TG_ARGV[0]::BIGINT)
    ON CONFLICT (tag) DO UPDATE SET n = c.n + excluded.n; RETURN NULL; END
$$;
CREATE CONSTRAINT TRIGGER article_tags_counted_insert AFTER INSERT ON article_tags
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION count_article_tag(1);
CREATE CONSTRAINT TRIGGER article_tags_counted_delete AFTER DELETE ON article_tags
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION count_article_tag('-1');

-- Backfill from the rows already there. CREATE TRIGGER already holds a lock on each table that makes
-- writes wait until this transaction commits; the explicit SHARE lock says so: no row can be written
-- between the counting and the triggers taking over.
LOCK TABLE articles, article_tags, favorites IN SHARE MODE;
INSERT INTO article_counts (scope, n) SELECT 'all', COUNT(*) FROM articles;
INSERT INTO article_counts (scope, n) SELECT 'author:' || author_id, COUNT(*) FROM articles GROUP BY author_id;
INSERT INTO article_counts (scope, n) SELECT 'favorited:' || user_id, COUNT(*) FROM favorites GROUP BY user_id;
INSERT INTO tag_counts (tag, n) SELECT tag, COUNT(*) FROM article_tags GROUP BY tag;
