-- Maintained counts for articlesCount and the tag cloud. Keep in step with ../postgresql/0005_maintained_counts.sql,
-- which says why they are kept by triggers. SQLite fires these for foreign-key cascades too, and runs one
-- writer at a time, so the lock order there is moot here.
-- Statements inside a trigger share a line with its END: the migration runner splits a file at every
-- semicolon that ends a line (service/storage/migrate.py).
CREATE TABLE article_counts (
    scope TEXT PRIMARY KEY,
    n INTEGER NOT NULL
);
CREATE TABLE tag_counts (
    tag TEXT PRIMARY KEY,
    n INTEGER NOT NULL
);
CREATE INDEX tag_counts_popular_idx ON tag_counts (n DESC, tag);

CREATE TRIGGER articles_counted_insert AFTER INSERT ON articles BEGIN
    INSERT INTO article_counts (scope, n) VALUES ('all', 1), ('author:' || NEW.author_id, 1)
    ON CONFLICT (scope) DO UPDATE SET n = n + excluded.n; END;
CREATE TRIGGER articles_counted_delete BEFORE DELETE ON articles BEGIN
    INSERT INTO article_counts (scope, n) VALUES ('all', -1), ('author:' || OLD.author_id, -1)
    ON CONFLICT (scope) DO UPDATE SET n = n + excluded.n; END;
CREATE TRIGGER favorites_counted_insert AFTER INSERT ON favorites BEGIN
    INSERT INTO article_counts (scope, n) VALUES ('favorited:' || NEW.user_id, 1)
    ON CONFLICT (scope) DO UPDATE SET n = n + excluded.n; END;
CREATE TRIGGER favorites_counted_delete AFTER DELETE ON favorites BEGIN
    INSERT INTO article_counts (scope, n) VALUES ('favorited:' || OLD.user_id, -1)
    ON CONFLICT (scope) DO UPDATE SET n = n + excluded.n; END;
CREATE TRIGGER article_tags_counted_insert AFTER INSERT ON article_tags BEGIN
    INSERT INTO tag_counts (tag, n) VALUES (NEW.tag, 1)
    ON CONFLICT (tag) DO UPDATE SET n = n + excluded.n; END;
CREATE TRIGGER article_tags_counted_delete AFTER DELETE ON article_tags BEGIN
    INSERT INTO tag_counts (tag, n) VALUES (OLD.tag, -1)
    ON CONFLICT (tag) DO UPDATE SET n = n + excluded.n; END;

-- Backfill from the rows already there (the runner's transaction holds SQLite's one write lock).
INSERT INTO article_counts (scope, n) SELECT 'all', COUNT(*) FROM articles;
INSERT INTO article_counts (scope, n) SELECT 'author:' || author_id, COUNT(*) FROM articles GROUP BY author_id;
INSERT INTO article_counts (scope, n) SELECT 'favorited:' || user_id, COUNT(*) FROM favorites GROUP BY user_id;
INSERT INTO tag_counts (tag, n) SELECT tag, COUNT(*) FROM article_tags GROUP BY tag;
