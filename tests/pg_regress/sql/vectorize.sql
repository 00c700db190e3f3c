-- bge_backfill and bge_vectorize: every vector they write must equal bge_embed(source) bitwise.
-- Timings vary, so progress NOTICEs are hidden here (tests/vectorize/stream.sh checks them).
CREATE FUNCTION wait_vectorized() RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    FOR i IN 1..1200 LOOP
        IF NOT EXISTS (SELECT FROM bge_vectorize_status() WHERE pending > 0) THEN
            RETURN 'caught up';
        END IF;
        PERFORM pg_sleep(0.1);
    END LOOP;
    RETURN 'still pending after 120 s';
END $$;

-- Backfill: NULL sources stay NULL; batches of awkward sizes.
CREATE TABLE bf (id int PRIMARY KEY, body text, emb real[]);
INSERT INTO bf SELECT g, CASE WHEN g % 97 = 0 THEN NULL ELSE 'passage ' || g || repeat(' lorem ipsum', g % 23) END
FROM generate_series(1, 500) g;
SET client_min_messages = warning;
CALL bge_backfill('bf', 'body', 'emb', batch_tokens => 700);
RESET client_min_messages;
SELECT count(*) AS rows, count(emb) AS filled, count(*) FILTER (WHERE emb = bge_embed(body)) AS bitwise_equal FROM bf;
-- Resuming fills only what is NULL; one row per batch (a commit each).
UPDATE bf SET emb = NULL WHERE id % 50 = 0;
UPDATE bf SET emb = '{1}' WHERE id = 7;
SET client_min_messages = warning;
CALL bge_backfill('bf', 'body', 'emb', 'all-MiniLM-L6-v2', 1);
RESET client_min_messages;
SELECT count(emb) AS filled, count(*) FILTER (WHERE emb = bge_embed(body, 'all-MiniLM-L6-v2')) AS bitwise_equal, (SELECT emb FROM bf WHERE id = 7) AS untouched FROM bf;

-- Rows whose text fails alone are skipped, listed, and do not stop the table.
CREATE TABLE bf_long (id int PRIMARY KEY, body text, emb real[]);
INSERT INTO bf_long SELECT g, CASE WHEN g % 10 = 3 THEN repeat('word ', 600) ELSE 'short ' || g END FROM generate_series(1, 40) g;
SET bge.truncate = off;
SET client_min_messages = warning;
CALL bge_backfill('bf_long', 'body', 'emb');
RESET client_min_messages;
RESET bge.truncate;
SELECT count(emb) AS filled, count(*) FILTER (WHERE emb = bge_embed(body)) AS bitwise_equal FROM bf_long;

-- Mistakes are refused before any work.
BEGIN;
CALL bge_backfill('bf', 'body', 'emb');
ROLLBACK;
CALL bge_backfill('bf', 'nope', 'emb');
CALL bge_backfill('bf', 'body', 'nope');
CALL bge_backfill('bf', 'id', 'emb');
CALL bge_backfill('bf', 'body', 'body');
CALL bge_backfill('bf', 'body', 'id');
CALL bge_backfill('bf', 'body', 'emb', 'no-such-model');
CALL bge_backfill('bf', 'body', 'emb', batch_tokens => 0);
CREATE TABLE bf_gen (body text, emb real[] GENERATED ALWAYS AS (bge_embed(body, 'all-MiniLM-L6-v2')) STORED);
CALL bge_backfill('bf_gen', 'body', 'emb');
CREATE VIEW bf_view AS SELECT * FROM bf;
CALL bge_backfill('bf_view', 'body', 'emb');

-- Vectorize: rows already there, inserts, updates, deletes, a row updated twice, an explicit
-- vector (replaced), an update that leaves the source alone (kept).
CREATE TABLE vz (id serial PRIMARY KEY, body text, emb real[], note text);
INSERT INTO vz (body) SELECT 'before ' || g FROM generate_series(1, 60) g;
SELECT bge_vectorize('vz', 'body', 'emb');
INSERT INTO vz (body) SELECT 'after ' || g || repeat(' more', g % 9) FROM generate_series(1, 60) g;
UPDATE vz SET body = body || ' (edited)' WHERE id % 3 = 0;
UPDATE vz SET body = body || ' (again)' WHERE id % 9 = 0;
DELETE FROM vz WHERE id % 10 = 0;
INSERT INTO vz (body, emb) VALUES ('explicit vector', '{1,2,3}');
INSERT INTO vz (body) VALUES (NULL);
SELECT wait_vectorized();
SELECT count(*) AS rows, count(emb) AS filled, count(*) FILTER (WHERE emb = bge_embed(body)) AS bitwise_equal FROM vz;
UPDATE vz SET note = 'the source stays' WHERE id = 1 RETURNING emb IS NOT NULL AS kept;
UPDATE vz SET body = body WHERE id = 2 RETURNING emb IS NOT NULL AS kept;
UPDATE vz SET body = 'changed' WHERE id = 4 RETURNING emb IS NULL AS queued;
SELECT wait_vectorized();
SELECT count(*) FILTER (WHERE emb = bge_embed(body)) AS bitwise_equal, count(body) AS with_source FROM vz;
SELECT tbl, source, target, model, pending, failed, lag, last_error, worker_pid IS NOT NULL AS worker FROM bge_vectorize_status();

-- Failing rows are skipped, shown with their key, and retried when their source changes.
SET bge.truncate = off;
CREATE TABLE vz_long (id int PRIMARY KEY, body text, emb real[]);
SELECT bge_vectorize('vz_long', 'body', 'emb');
RESET bge.truncate;
INSERT INTO vz_long SELECT g, CASE WHEN g % 10 = 3 THEN repeat('word ', 600) ELSE 'short ' || g END FROM generate_series(1, 30) g;
SELECT wait_vectorized();
SELECT tbl, pending, failed, last_error FROM bge_vectorize_status() WHERE tbl = 'vz_long'::regclass;
SELECT row_key, error FROM bge_vectorize_errors ORDER BY row_key;
UPDATE vz_long SET body = 'now short' WHERE id = 13;
SELECT wait_vectorized();
SELECT pending, failed FROM bge_vectorize_status() WHERE tbl = 'vz_long'::regclass;
SELECT count(emb) AS filled, count(*) FILTER (WHERE emb = bge_embed(body)) AS bitwise_equal FROM vz_long;

-- Partitioned tables: bge_backfill and bge_vectorize cover every partition at any depth, those
-- created or attached later too; a row an UPDATE moves to another partition keeps its vector
-- unless its text changed.
CREATE TABLE pt (id int PRIMARY KEY, body text, emb real[]) PARTITION BY RANGE (id);
CREATE TABLE pt_1 PARTITION OF pt FOR VALUES FROM (0) TO (100);
CREATE TABLE pt_2 PARTITION OF pt FOR VALUES FROM (100) TO (200) PARTITION BY RANGE (id);
CREATE TABLE pt_2a PARTITION OF pt_2 FOR VALUES FROM (100) TO (150);
CREATE TABLE pt_2b PARTITION OF pt_2 FOR VALUES FROM (150) TO (200);
INSERT INTO pt SELECT g, 'partitioned ' || g || repeat(' text', g % 5) FROM generate_series(1, 199) g;
SET client_min_messages = warning;
CALL bge_backfill('pt', 'body', 'emb', batch_tokens => 300);
RESET client_min_messages;
SELECT count(*) AS rows, count(*) FILTER (WHERE emb = bge_embed(body)) AS bitwise_equal FROM pt;
SELECT bge_vectorize('pt', 'body', 'emb');
CREATE TABLE pt_3 PARTITION OF pt FOR VALUES FROM (200) TO (300);
CREATE TABLE pt_4 (id int PRIMARY KEY, body text, emb real[]);
INSERT INTO pt_4 VALUES (350, 'attached later, not embedded yet', NULL);
ALTER TABLE pt ATTACH PARTITION pt_4 FOR VALUES FROM (300) TO (400);
INSERT INTO pt SELECT g, 'added ' || g FROM generate_series(200, 260) g;
UPDATE pt SET body = body || ' (edited)' WHERE id % 7 = 0;
SELECT c.relname, t.tgenabled FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
WHERE t.tgname = 'bge_vectorize_emb' AND t.tgrelid IN (SELECT relid FROM pg_partition_tree('pt')) ORDER BY 1;
UPDATE pt SET id = id + 300 WHERE id = 5 RETURNING tableoid::regclass AS now_in, emb = bge_embed(body) AS kept;
UPDATE pt SET id = id + 300, body = body || ' (moved and edited)' WHERE id = 6 RETURNING tableoid::regclass AS now_in, emb IS NULL AS queued;
SELECT wait_vectorized();
SELECT count(*) AS rows, count(*) FILTER (WHERE emb = bge_embed(body)) AS bitwise_equal FROM pt;
SELECT tbl, pending, failed, last_error FROM bge_vectorize_status() WHERE tbl = 'pt'::regclass;
SELECT bge_unvectorize('pt');
SELECT count(*) AS triggers_left FROM pg_trigger WHERE tgname = 'bge_vectorize_emb' AND tgrelid IN (SELECT relid FROM pg_partition_tree('pt'));
SELECT count(*) AS indexes_left FROM pg_indexes WHERE tablename LIKE 'pt%' AND indexname LIKE '%bge_pending';

-- Registering twice, other owners' tables, unregistering.
SELECT bge_vectorize('vz', 'body', 'emb');
CREATE ROLE bge_vectorize_stranger;
GRANT SELECT ON vz TO bge_vectorize_stranger;
SELECT count(*) AS registrations FROM bge_vectorize_status();
SET ROLE bge_vectorize_stranger;
SELECT bge_vectorize('bf', 'body', 'emb');
SELECT bge_unvectorize('vz');
-- Only the registrations of tables the role can read.
SELECT tbl FROM bge_vectorize_status();
SELECT tbl FROM bge_vectorized;
RESET ROLE;
SELECT bge_unvectorize('vz');
SELECT bge_unvectorize('vz');
SELECT bge_unvectorize('vz_long', 'emb');
SELECT count(*) AS triggers FROM pg_trigger WHERE tgname LIKE 'bge_vectorize%';
SELECT count(*) AS pending_indexes FROM pg_class WHERE relname LIKE '%bge_pending';
INSERT INTO vz (body) VALUES ('no longer vectorized') RETURNING emb IS NULL AS left_alone;
REVOKE ALL ON vz FROM bge_vectorize_stranger;
DROP ROLE bge_vectorize_stranger;
-- Waits (up to 10 s) until this database's vectorizer worker runs, or is gone; whether it did.
CREATE FUNCTION pg_temp.wait_for_vectorizer(running boolean) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    FOR i IN 1..100 LOOP
        IF EXISTS (SELECT FROM pg_stat_activity WHERE backend_type = 'pg_bge vectorizer' AND datname = current_database()) = running THEN
            RETURN true;
        END IF;
        PERFORM pg_sleep(0.1);
        -- pg_stat_activity is read once per transaction unless told to read it again.
        PERFORM pg_stat_clear_snapshot();
    END LOOP;
    RETURN false;
END $$;
-- A worker starts again after the last one exited: its lock goes with it.
SELECT pid AS first_worker FROM pg_stat_activity WHERE backend_type = 'pg_bge vectorizer' AND datname = current_database() \gset
SELECT pg_terminate_backend(:first_worker) AS terminated_first;
SELECT pg_temp.wait_for_vectorizer(false) AS stopped;
SELECT coalesce(bge_internal.bge_vectorizer_start() <> :first_worker, false) AS restarted;
SELECT pg_temp.wait_for_vectorizer(true) AS running;
-- The worker stops on SIGTERM (and is not restarted) so DROP DATABASE is not blocked.
SELECT bool_and(pg_terminate_backend(pid)) AS terminated FROM pg_stat_activity
WHERE backend_type = 'pg_bge vectorizer' AND datname = current_database();
SELECT pg_temp.wait_for_vectorizer(false) AS stopped;
SELECT count(*) AS vectorizers_left FROM pg_stat_activity WHERE backend_type = 'pg_bge vectorizer' AND datname = current_database();
