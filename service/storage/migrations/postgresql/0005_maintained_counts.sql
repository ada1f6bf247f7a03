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

-- Lock order, so that counter updates cannot deadlock: an article's own counters ('all', then
-- 'author:<id>', one statement in sorted order) are taken BEFORE its row is deleted, hence before the
-- cascades take the tag and 'favorited:' counters; so two article deletes, or a delete and a create
-- (which takes 'all' first too), meet on 'all' before anything else and run one after the other.
-- A favorite or unfavorite takes its article's row first, as a delete does, then one counter only
-- (LOCK_ARTICLE in service/articles/repository.py). The price: creates and deletes of articles
-- queue on the 'all' row for the rest of their transaction; should that ever show, split it into
-- slots that a read sums.
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
CREATE TRIGGER articles_counted_insert AFTER INSERT ON articles
    FOR EACH ROW EXECUTE FUNCTION count_article(1);
CREATE TRIGGER articles_counted_delete BEFORE DELETE ON articles
    FOR EACH ROW EXECUTE FUNCTION count_article('-1');

CREATE FUNCTION count_favorite() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO article_counts AS c (scope, n)
    VALUES ('favorited:' || COALESCE(NEW.user_id, OLD.user_id), TG_ARGV[0]::BIGINT)
    ON CONFLICT (scope) DO UPDATE SET n = c.n + excluded.n; RETURN NULL; END
$$;
CREATE TRIGGER favorites_counted_insert AFTER INSERT ON favorites
    FOR EACH ROW EXECUTE FUNCTION count_favorite(1);
CREATE TRIGGER favorites_counted_delete AFTER DELETE ON favorites
    FOR EACH ROW EXECUTE FUNCTION count_favorite('-1');

CREATE FUNCTION count_article_tag() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO tag_counts AS c (tag, n) VALUES (COALESCE(NEW.tag, OLD.tag), TG_ARGV[0]::BIGINT)
    ON CONFLICT (tag) DO UPDATE SET n = c.n + excluded.n; RETURN NULL; END
$$;
CREATE TRIGGER article_tags_counted_insert AFTER INSERT ON article_tags
    FOR EACH ROW EXECUTE FUNCTION count_article_tag(1);
CREATE TRIGGER article_tags_counted_delete AFTER DELETE ON article_tags
    FOR EACH ROW EXECUTE FUNCTION count_article_tag('-1');

-- Backfill from the rows already there. CREATE TRIGGER already holds a lock on each table that makes
-- writes wait until this transaction commits; the explicit SHARE lock says so: no row can be written
-- between the counting and the triggers taking over.
LOCK TABLE articles, article_tags, favorites IN SHARE MODE;
INSERT INTO article_counts (scope, n) SELECT 'all', COUNT(*) FROM articles;
INSERT INTO article_counts (scope, n) SELECT 'author:' || author_id, COUNT(*) FROM articles GROUP BY author_id;
INSERT INTO article_counts (scope, n) SELECT 'favorited:' || user_id, COUNT(*) FROM favorites GROUP BY user_id;
INSERT INTO tag_counts (tag, n) SELECT tag, COUNT(*) FROM article_tags GROUP BY tag;
