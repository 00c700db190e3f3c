-- Executor batching (BGE Batch): the plans each statement form gets, results bitwise those of
-- row-by-row calls (bge.executor_batching = off), and unchanged semantics: row order, LIMIT,
-- cursors, rescans, errors in the middle of a batch, volatile functions, parallel workers.
SET max_parallel_workers_per_gather = 0;
-- Random texts of awkward lengths (1 to ~700 characters, some past the model's 256 tokens),
-- with NULLs, empty strings, duplicates and non-ASCII.
SELECT setseed(0.35);
CREATE TABLE docs AS
SELECT i AS id,
       CASE WHEN i % 29 = 0 THEN NULL
            WHEN i % 31 = 0 THEN ''
            WHEN i % 37 = 0 THEN 'duplicate text'
            ELSE (SELECT string_agg((ARRAY['vector', 'database', 'Straße', 'índice', '東京', 'embedding', 'of', 'the', 'a', '42', 'PostgreSQL', 'résumé'])[1 + floor(random() * 12)::int], ' ')
                  FROM generate_series(1, 1 + floor(random() * random() * 120)::int + i * 0))
       END AS body
FROM generate_series(1, 157) AS i;
ALTER TABLE docs ADD PRIMARY KEY (id);
ANALYZE docs;
SELECT count(*) AS rows, count(body) AS non_null, max(length(body)) > 400 AS some_long FROM docs;

-- EXPLAIN without costs and the worker count, alike on PostgreSQL 15 and 18 (whose ANALYZE
-- prints rows with decimals and index searches).
CREATE FUNCTION pg_temp.plan(query text, with_analyze boolean DEFAULT false) RETURNS SETOF text LANGUAGE plpgsql AS $$
DECLARE
    line text;
BEGIN
    FOR line IN EXECUTE 'EXPLAIN (COSTS OFF' || CASE WHEN with_analyze THEN ', ANALYZE, TIMING OFF, SUMMARY OFF, BUFFERS OFF' ELSE '' END || ') ' || query LOOP
        CONTINUE WHEN line ~ '^\s*Index Searches: ';
        RETURN NEXT regexp_replace(regexp_replace(line, 'Workers (Planned|Launched): \d+', 'Workers \1: N'), 'rows=(\d+)\.00 ', 'rows=\1 ', 'g');
    END LOOP;
END $$;

-- The reference: every call on its own.
SET bge.executor_batching = off;
CREATE TABLE ref AS
SELECT id, bge_embed(body, 'all-MiniLM-L6-v2') AS dense, bge_embed_query(body, 'all-MiniLM-L6-v2') AS query,
       bge_embed(body) AS session_model
FROM docs;
SELECT * FROM pg_temp.plan('SELECT id, bge_embed(body, ''all-MiniLM-L6-v2'') FROM docs');
RESET bge.executor_batching;
SHOW bge.executor_batching;

-- Each statement form gets the node, and computes what the calls compute.
SELECT * FROM pg_temp.plan('SELECT id, bge_embed(body, ''all-MiniLM-L6-v2'') FROM docs');
SELECT count(*) FILTER (WHERE r.dense IS NOT DISTINCT FROM b.e) AS bitwise, count(*) AS rows
FROM ref r JOIN (SELECT id, bge_embed(body, 'all-MiniLM-L6-v2') AS e FROM docs) b USING (id);
-- Row order: the node returns its input's rows in their order.
SELECT bool_and(a.n = a.id) AS in_order FROM (SELECT id, row_number() OVER () AS n FROM (SELECT id, bge_embed(body, 'all-MiniLM-L6-v2') FROM docs ORDER BY id) s) a;

SELECT * FROM pg_temp.plan('SELECT count(bge_embed(body, ''all-MiniLM-L6-v2'')) FROM docs');
SELECT count(bge_embed(body, 'all-MiniLM-L6-v2')) AS counted FROM docs;
SELECT * FROM pg_temp.plan('SELECT array_agg(bge_embed(body, ''all-MiniLM-L6-v2'')) FROM docs');
SELECT (SELECT array_agg(bge_embed(body, 'all-MiniLM-L6-v2') ORDER BY id) FROM docs WHERE body IS NOT NULL)
       = (SELECT array_agg(dense ORDER BY id) FROM ref WHERE dense IS NOT NULL) AS array_agg_bitwise;
-- An aggregate over a call with FILTER evaluates it for the filtered rows only: not batched.
SELECT * FROM pg_temp.plan('SELECT count(bge_embed(body, ''all-MiniLM-L6-v2'')) FILTER (WHERE id > 150) FROM docs');

SELECT * FROM pg_temp.plan('CREATE TABLE ctas AS SELECT id, bge_embed(body, ''all-MiniLM-L6-v2'') AS e FROM docs');
CREATE TABLE ctas AS SELECT id, bge_embed(body, 'all-MiniLM-L6-v2') AS e FROM docs;
SELECT count(*) FILTER (WHERE r.dense IS NOT DISTINCT FROM c.e) AS ctas_bitwise FROM ref r JOIN ctas c USING (id);

CREATE TABLE ins (id int PRIMARY KEY, e real[], q real[]);
SELECT * FROM pg_temp.plan('INSERT INTO ins (id, e) SELECT id, bge_embed(body, ''all-MiniLM-L6-v2'') FROM docs');
INSERT INTO ins (id, e) SELECT id, bge_embed(body, 'all-MiniLM-L6-v2') FROM docs;
SELECT count(*) FILTER (WHERE r.dense IS NOT DISTINCT FROM i.e) AS insert_bitwise FROM ref r JOIN ins i USING (id);

SELECT * FROM pg_temp.plan('UPDATE ins SET q = bge_embed_query(d.body, ''all-MiniLM-L6-v2'') FROM docs d WHERE d.id = ins.id');
UPDATE ins SET q = bge_embed_query(d.body, 'all-MiniLM-L6-v2') FROM docs d WHERE d.id = ins.id;
SET enable_indexscan = off;
SET enable_bitmapscan = off;
SELECT * FROM pg_temp.plan('UPDATE ins SET e = bge_embed((SELECT body FROM docs d WHERE d.id = ins.id))');
RESET enable_indexscan;
RESET enable_bitmapscan;
UPDATE ins SET e = NULL;
UPDATE ins SET e = bge_embed(d.body) FROM docs d WHERE d.id = ins.id;
SELECT count(*) FILTER (WHERE r.query IS NOT DISTINCT FROM i.q) AS update_query_bitwise,
       count(*) FILTER (WHERE r.session_model IS NOT DISTINCT FROM i.e) AS update_session_model_bitwise
FROM ref r JOIN ins i USING (id);

-- A join and a subquery in FROM.
SET enable_nestloop = off;
SET enable_mergejoin = off;
SELECT * FROM pg_temp.plan('SELECT r.id, bge_embed(d.body, ''all-MiniLM-L6-v2'') <=> r.dense FROM ref r JOIN docs d USING (id) WHERE r.id % 2 = 0');
RESET enable_nestloop;
RESET enable_mergejoin;
SELECT count(*) FILTER (WHERE s.e IS NOT DISTINCT FROM s.dense) AS join_bitwise, count(*) FROM (
    SELECT bge_embed(d.body, 'all-MiniLM-L6-v2') AS e, r.dense FROM ref r JOIN docs d USING (id) WHERE r.id % 2 = 0) s;
SELECT count(*) FILTER (WHERE s.e IS NOT DISTINCT FROM r.dense) AS subquery_bitwise
FROM (SELECT id, bge_embed(body, 'all-MiniLM-L6-v2') AS e FROM (SELECT * FROM docs WHERE id > 10 ORDER BY id DESC) x) s JOIN ref r USING (id);

-- Only calls every row evaluates: a CASE or COALESCE evaluates them for some rows.
SELECT * FROM pg_temp.plan('SELECT CASE WHEN id > 100 THEN bge_embed(body, ''all-MiniLM-L6-v2'') END FROM docs');
SELECT * FROM pg_temp.plan('SELECT COALESCE(e, bge_embed(''x'' || id, ''all-MiniLM-L6-v2'')) FROM ins');
-- Volatile arguments would run ahead of the rows returned: not batched.
SELECT * FROM pg_temp.plan('SELECT bge_embed(body || random()::text, ''all-MiniLM-L6-v2'') FROM docs');
-- Nor where a volatile function below the call would run for rows read ahead: the input's
-- nextval counts the rows returned, as without batching.
CREATE SEQUENCE below;
SELECT count(*) AS rows FROM (SELECT id, bge_embed(body, 'all-MiniLM-L6-v2') FROM (SELECT id, body, nextval('below') FROM docs ORDER BY id OFFSET 0) s LIMIT 4) l;
SELECT last_value AS nextval_calls_below FROM below;
SELECT * FROM pg_temp.plan('SELECT bge_embed(body, ''all-MiniLM-L6-v2'') FROM (SELECT id, body, nextval(''below'') FROM docs ORDER BY id OFFSET 0) s LIMIT 4');
-- A SET clause on the function is honoured: such a function is not batched.
ALTER FUNCTION bge_embed(text) SET bge.model = 'tiny-bge-m3';
SELECT * FROM pg_temp.plan('SELECT bge_embed(body) FROM docs');
SELECT count(*) FILTER (WHERE bge_embed(body) IS NOT DISTINCT FROM bge_embed(body, 'tiny-bge-m3')) AS set_clause_honoured, count(*) FROM docs WHERE id <= 20;
ALTER FUNCTION bge_embed(text) RESET ALL;
-- A C function on one of pg_bge's symbols, declared with other arguments, is not taken for it.
CREATE FUNCTION public.not_bge_embed(text, text) RETURNS real[] AS '$libdir/pg_bge', 'bge_embed_wrapper' LANGUAGE C IMMUTABLE STRICT;
SELECT * FROM pg_temp.plan('SELECT not_bge_embed(body, ''tiny-bge-m3'') FROM docs');
DROP FUNCTION public.not_bge_embed(text, text);
-- Off: no node.
SET bge.executor_batching = off;
SELECT * FROM pg_temp.plan('SELECT count(bge_embed(body, ''all-MiniLM-L6-v2'')) FROM docs');
RESET bge.executor_batching;

-- LIMIT: batches grow 1, 2, 4, ... so a LIMIT computes little more than it returns.
SELECT * FROM pg_temp.plan('SELECT id, bge_embed(body, ''all-MiniLM-L6-v2'') FROM docs ORDER BY id LIMIT 5', true);
SELECT count(*) FILTER (WHERE r.dense IS NOT DISTINCT FROM l.e) AS limit_bitwise, count(*) AS rows
FROM (SELECT id, bge_embed(body, 'all-MiniLM-L6-v2') AS e FROM docs ORDER BY id LIMIT 5) l JOIN ref r USING (id);

-- A volatile function in the same target list runs once per row returned, in order.
CREATE SEQUENCE seq;
SELECT n, id, e IS NOT DISTINCT FROM (SELECT dense FROM ref WHERE ref.id = s.id) AS bitwise
FROM (SELECT nextval('seq') AS n, id, bge_embed(body, 'all-MiniLM-L6-v2') AS e FROM docs ORDER BY id LIMIT 6) s;
SELECT currval('seq') AS nextval_calls;
SELECT * FROM pg_temp.plan('SELECT nextval(''seq''), bge_embed(body, ''all-MiniLM-L6-v2'') FROM docs');

-- Cursors: each FETCH returns the next rows, bitwise; a SCROLL cursor fetches backward too.
CREATE TEMP TABLE fetched (step int, id int, e real[]);
CREATE FUNCTION pg_temp.fetch_into(cur refcursor, step int, n int) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    r record;
    k bigint := 0;
BEGIN
    FOR i IN 1..n LOOP
        FETCH cur INTO r;
        EXIT WHEN NOT FOUND;
        INSERT INTO fetched VALUES (step, r.id, r.e);
        k := k + 1;
    END LOOP;
    RETURN k;
END $$;
BEGIN;
DECLARE c CURSOR FOR SELECT id, bge_embed(body, 'all-MiniLM-L6-v2') AS e FROM docs ORDER BY id;
SELECT pg_temp.fetch_into('c', 1, 3) AS first, pg_temp.fetch_into('c', 2, 1) AS second, pg_temp.fetch_into('c', 3, 500) AS rest;
COMMIT;
SELECT count(*) FILTER (WHERE r.dense IS NOT DISTINCT FROM f.e) AS cursor_bitwise, count(*) AS rows,
       count(DISTINCT id) AS ids, bool_and(step = CASE WHEN id <= 3 THEN 1 WHEN id = 4 THEN 2 ELSE 3 END) AS in_order
FROM fetched f JOIN ref r USING (id);
CREATE FUNCTION pg_temp.scroll(cur refcursor) RETURNS TABLE (step text, id int, bitwise boolean) LANGUAGE plpgsql AS $$
DECLARE
    r record;
BEGIN
    FETCH ABSOLUTE 7 FROM cur INTO r;
    step := 'absolute 7'; id := r.id; bitwise := r.e IS NOT DISTINCT FROM (SELECT dense FROM ref WHERE ref.id = r.id); RETURN NEXT;
    FETCH PRIOR FROM cur INTO r;
    step := 'prior'; id := r.id; bitwise := r.e IS NOT DISTINCT FROM (SELECT dense FROM ref WHERE ref.id = r.id); RETURN NEXT;
    FETCH FIRST FROM cur INTO r;
    step := 'first'; id := r.id; bitwise := r.e IS NOT DISTINCT FROM (SELECT dense FROM ref WHERE ref.id = r.id); RETURN NEXT;
    FETCH LAST FROM cur INTO r;
    step := 'last'; id := r.id; bitwise := r.e IS NOT DISTINCT FROM (SELECT dense FROM ref WHERE ref.id = r.id); RETURN NEXT;
END $$;
BEGIN;
DECLARE s SCROLL CURSOR FOR SELECT id, bge_embed(body, 'all-MiniLM-L6-v2') AS e FROM docs WHERE id <= 12;
SELECT * FROM pg_temp.scroll('s');
COMMIT;

-- Rescans: the inner side of a nested loop, with a parameter from the outer row in the
-- arguments, computes each outer row's batch again.
CREATE TABLE lateral_ref AS SELECT o.k, d.id, bge_embed(d.body || o.k, 'all-MiniLM-L6-v2') AS e FROM (VALUES (1), (2), (3)) o(k), docs d WHERE d.id BETWEEN 1 AND 9;
SET bge.executor_batching = off;
SELECT count(*) FILTER (WHERE l.e IS NOT DISTINCT FROM bge_embed(d.body || l.k, 'all-MiniLM-L6-v2')) AS lateral_reference_bitwise, count(*) AS rows
FROM lateral_ref l JOIN docs d USING (id);
RESET bge.executor_batching;
SELECT * FROM pg_temp.plan('SELECT o.k, s.id, s.e FROM (VALUES (1), (2), (3)) o(k) CROSS JOIN LATERAL (SELECT d.id, bge_embed(d.body || o.k, ''all-MiniLM-L6-v2'') AS e FROM docs d WHERE d.id BETWEEN 1 AND 9 ORDER BY d.id LIMIT 100) s', true);
SELECT count(*) FILTER (WHERE l.e IS NOT DISTINCT FROM s.e) AS rescan_bitwise, count(*) AS rows
FROM (SELECT o.k, s.id, s.e FROM (VALUES (1), (2), (3)) o(k) CROSS JOIN LATERAL (SELECT d.id, bge_embed(d.body || o.k, 'all-MiniLM-L6-v2') AS e FROM docs d WHERE d.id BETWEEN 1 AND 9 ORDER BY d.id LIMIT 100) s) s
JOIN lateral_ref l USING (k, id);
-- A correlated subquery's aggregate, run once per outer row.
SELECT k, (SELECT count(bge_embed(d.body || o.k, 'all-MiniLM-L6-v2')) FROM docs d WHERE d.id <= o.k * 3) AS counted
FROM (VALUES (1), (2), (3)) o(k);

-- An error in the middle of a batch is raised at the row that causes it: the rows before it
-- come out first, as without batching.
\set VERBOSITY terse
SELECT id, bge_embed(body, CASE WHEN id = 6 THEN 'no-such-model' ELSE 'all-MiniLM-L6-v2' END) IS NOT NULL AS ok FROM docs WHERE id < 10 ORDER BY id;
BEGIN;
DECLARE e CURSOR FOR SELECT id, bge_embed(body, CASE WHEN id = 6 THEN 'no-such-model' ELSE 'all-MiniLM-L6-v2' END) IS NOT NULL AS ok FROM docs WHERE id < 10 ORDER BY id;
FETCH 5 FROM e;
FETCH 1 FROM e;
ROLLBACK;
-- bge.truncate = off: a text longer than the model takes fails at its own row.
SET bge.truncate = off;
SET bge.model = 'all-MiniLM-L6-v2';
BEGIN;
DECLARE t CURSOR FOR SELECT id, bge_embed(body) IS NOT NULL AS ok
FROM (SELECT id, body FROM docs WHERE id <= 4 UNION ALL SELECT 1000, repeat('word ', 600) UNION ALL SELECT 1001, 'after') s ORDER BY id;
FETCH 4 FROM t;
FETCH 1 FROM t;
ROLLBACK;
RESET bge.truncate;
RESET bge.model;
\set VERBOSITY default
-- The session is fine afterwards.
SELECT count(bge_embed(body, 'all-MiniLM-L6-v2')) AS after_errors FROM docs WHERE id < 20;

-- Parallel workers each batch their own rows.
SET max_parallel_workers_per_gather = 2;
SET parallel_setup_cost = 0;
SET parallel_tuple_cost = 0;
SET min_parallel_table_scan_size = 0;
SELECT * FROM pg_temp.plan('SELECT id, bge_embed(body, ''all-MiniLM-L6-v2'') FROM docs');
SELECT count(*) FILTER (WHERE r.dense IS NOT DISTINCT FROM p.e) AS parallel_bitwise, count(*) AS rows
FROM (SELECT id, bge_embed(body, 'all-MiniLM-L6-v2') AS e FROM docs) p JOIN ref r USING (id);
RESET max_parallel_workers_per_gather;
RESET parallel_setup_cost;
RESET parallel_tuple_cost;
RESET min_parallel_table_scan_size;
SET max_parallel_workers_per_gather = 0;

-- BGE-M3's sparse and ColBERT outputs, and reranking, batched bitwise.
SET bge.executor_batching = off;
CREATE TABLE m3_ref AS SELECT id, bge_embed_sparse(body, 'tiny-bge-m3') AS sparse, bge_sparse_text(body, 'tiny-bge-m3') AS sparse_text,
       bge_embed_colbert(body, 'tiny-bge-m3') AS colbert, bge_embed_query(body, 'tiny-bge-m3', 'Find the passage') AS task
FROM docs WHERE id <= 60;
RESET bge.executor_batching;
SELECT * FROM pg_temp.plan('SELECT bge_embed_sparse(body, ''tiny-bge-m3''), bge_sparse_text(body, ''tiny-bge-m3''), bge_embed_colbert(body, ''tiny-bge-m3''), bge_embed_query(body, ''tiny-bge-m3'', ''Find the passage'') FROM docs');
SELECT count(*) FILTER (WHERE r.sparse IS NOT DISTINCT FROM b.sparse) AS sparse_bitwise,
       count(*) FILTER (WHERE r.sparse_text IS NOT DISTINCT FROM b.sparse_text) AS sparse_text_bitwise,
       count(*) FILTER (WHERE r.colbert IS NOT DISTINCT FROM b.colbert) AS colbert_bitwise,
       count(*) FILTER (WHERE r.task IS NOT DISTINCT FROM b.task) AS task_bitwise, count(*) AS rows
FROM m3_ref r JOIN (SELECT id, bge_embed_sparse(body, 'tiny-bge-m3') AS sparse, bge_sparse_text(body, 'tiny-bge-m3') AS sparse_text,
       bge_embed_colbert(body, 'tiny-bge-m3') AS colbert, bge_embed_query(body, 'tiny-bge-m3', 'Find the passage') AS task
FROM docs WHERE id <= 60) b USING (id);

SELECT set_config('bge.model_dir', current_setting('bge.model_dir') || '/rerankers', false) IS NOT NULL AS rerankers_dir;
CREATE TABLE queries (qid int, q text);
INSERT INTO queries VALUES (1, 'vector database'), (2, 'Straße'), (3, NULL);
SET bge.executor_batching = off;
CREATE TABLE rerank_ref AS SELECT qid, id, bge_rerank(q, body, 'tiny-reranker-xlmr') AS raw, bge_rerank(q, body, 'tiny-reranker-bert', true) AS norm
FROM queries, docs WHERE id <= 50;
RESET bge.executor_batching;
SELECT * FROM pg_temp.plan('SELECT qid, id, bge_rerank(q, body, ''tiny-reranker-xlmr'') FROM queries, docs WHERE id <= 50');
SELECT count(*) FILTER (WHERE r.raw IS NOT DISTINCT FROM b.raw AND r.norm IS NOT DISTINCT FROM b.norm) AS rerank_bitwise, count(*) AS rows,
       count(*) FILTER (WHERE b.raw IS NULL) AS nulls
FROM rerank_ref r JOIN (SELECT qid, id, bge_rerank(q, body, 'tiny-reranker-xlmr') AS raw, bge_rerank(q, body, 'tiny-reranker-bert', true) AS norm
FROM queries, docs WHERE id <= 50) b USING (qid, id);
-- Two-stage retrieval: rerank the top of an ORDER BY ... LIMIT.
SELECT * FROM pg_temp.plan('SELECT id FROM docs ORDER BY bge_rerank(''vector database'', body, ''tiny-reranker-bert'') DESC LIMIT 3');
-- An embedder named where a reranker is needed: the error of the call.
SELECT bge_rerank('q', body, 'all-MiniLM-L6-v2') FROM docs WHERE id < 3;
RESET bge.model_dir;

-- EXECUTE permission is checked as for a call per row.
CREATE ROLE batch_reader;
GRANT SELECT ON docs TO batch_reader;
REVOKE EXECUTE ON FUNCTION bge_embed(text, text) FROM PUBLIC;
SET ROLE batch_reader;
SELECT count(bge_embed(body, 'all-MiniLM-L6-v2')) FROM docs;
RESET ROLE;
GRANT EXECUTE ON FUNCTION bge_embed(text, text) TO PUBLIC;
DROP OWNED BY batch_reader;
DROP ROLE batch_reader;

-- Generated columns stay per row (PostgreSQL computes them outside any plan).
CREATE TABLE gen (id int, body text, e real[] GENERATED ALWAYS AS (bge_embed(body, 'all-MiniLM-L6-v2')) STORED);
SELECT * FROM pg_temp.plan('INSERT INTO gen (id, body) SELECT id, body FROM docs');
INSERT INTO gen (id, body) SELECT id, body FROM docs WHERE id <= 20;
SELECT count(*) FILTER (WHERE r.dense IS NOT DISTINCT FROM g.e) AS generated_bitwise FROM gen g JOIN ref r USING (id);

DROP TABLE docs, ref, ctas, ins, lateral_ref, m3_ref, queries, rerank_ref, gen;
DROP SEQUENCE seq, below;
RESET max_parallel_workers_per_gather;
