-- Planner costs: with PostgreSQL's default parallel settings an embedding scan of a small
-- table gets a parallel plan (pg_bge offers one below min_parallel_table_scan_size), cheap
-- quals run before embedding ones, and parallel results equal serial ones bitwise.
CREATE TABLE passages AS
SELECT i AS id, 'Passage ' || i || ' is about ' ||
       (ARRAY['databases and SQL', 'cooking pasta', 'football', 'telescopes', 'guitars'])[1 + i % 5] ||
       repeat(' and more', i % 7) AS body
FROM generate_series(1, 300) AS i;
ANALYZE passages;

-- EXPLAIN's plan shape, without the worker count (one per core beyond the leader's).
CREATE FUNCTION pg_temp.plan(query text) RETURNS SETOF text LANGUAGE plpgsql AS $$
DECLARE
    line text;
BEGIN
    FOR line IN EXECUTE 'EXPLAIN (COSTS OFF) ' || query LOOP
        RETURN NEXT regexp_replace(line, 'Workers Planned: \d+', 'Workers Planned: N');
    END LOOP;
END $$;

SELECT * FROM pg_temp.plan($$SELECT bge_embed(body, 'all-MiniLM-L6-v2') FROM passages$$);
SELECT * FROM pg_temp.plan($$SELECT bge_embed(body) FROM passages$$);
SELECT * FROM pg_temp.plan($$CREATE TABLE embedded AS SELECT id, bge_embed(body, 'all-MiniLM-L6-v2') AS e FROM passages$$);
-- Cheap scans stay serial.
SELECT * FROM pg_temp.plan($$SELECT length(body) FROM passages$$);
-- The cheap qual first, the tokenising one second, whatever the order written.
SELECT * FROM pg_temp.plan($$SELECT id FROM passages WHERE bge_token_count(body) > 10 AND id < 10$$);
SELECT * FROM pg_temp.plan($$SELECT id FROM passages WHERE bge_embed(body) <=> bge_embed('football') < 0.5 AND bge_token_count(body) > 10$$);

-- Costs as declared (per call; per row for the set-returning array form).
SELECT p.oid::regprocedure AS function, p.procost AS cost, p.prorows AS rows, p.prosupport <> 0 AS has_support
FROM pg_proc p
JOIN pg_depend d ON d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e'
JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'pg_bge'
ORDER BY p.oid::regprocedure::text COLLATE "C";

-- The same vectors with and without parallel workers.
CREATE TABLE parallel_run AS SELECT id, bge_embed(body, 'all-MiniLM-L6-v2') AS e FROM passages;
SET max_parallel_workers_per_gather = 0;
SELECT * FROM pg_temp.plan($$SELECT bge_embed(body, 'all-MiniLM-L6-v2') FROM passages$$);
CREATE TABLE serial_run AS SELECT id, bge_embed(body, 'all-MiniLM-L6-v2') AS e FROM passages;
RESET max_parallel_workers_per_gather;
SELECT count(*) AS rows, count(*) FILTER (WHERE p.e = s.e) AS bitwise_equal FROM parallel_run p JOIN serial_run s USING (id);
DROP TABLE parallel_run, serial_run;

-- The hook offers a parallel scan only where PostgreSQL itself would plan one for a large
-- enough table: a query returns the same rows with it as without it. Each case: the plan, and
-- the rows of CREATE TABLE AS (which may run in parallel) with the hook's default settings and
-- with max_parallel_workers_per_gather = 0 (no parallel paths at all: the hook adds none).
CREATE FUNCTION pg_temp.same_rows(query text, OUT rows bigint, OUT same_as_serial bool) LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE 'CREATE TABLE hooked_rows AS ' || query;
    SET max_parallel_workers_per_gather = 0;
    EXECUTE 'CREATE TABLE serial_rows AS ' || query;
    RESET max_parallel_workers_per_gather;
    SELECT count(*), NOT EXISTS (TABLE hooked_rows EXCEPT ALL TABLE serial_rows) AND NOT EXISTS (TABLE serial_rows EXCEPT ALL TABLE hooked_rows)
    INTO rows, same_as_serial FROM hooked_rows;
    DROP TABLE hooked_rows, serial_rows;
END $$;

-- TABLESAMPLE: a sample scan only (a sequential scan would return every row).
SELECT * FROM pg_temp.plan($$SELECT bge_embed(body, 'all-MiniLM-L6-v2') FROM passages TABLESAMPLE BERNOULLI (50) REPEATABLE (1)$$);
SELECT * FROM pg_temp.same_rows($$SELECT id, bge_embed(body, 'all-MiniLM-L6-v2') AS e FROM passages TABLESAMPLE BERNOULLI (50) REPEATABLE (1)$$);

-- An inheritance parent: its rows and its children's (a scan of the parent table alone would
-- miss the children's). Partitioned tables likewise: PostgreSQL plans their partitions.
CREATE TABLE parent_passages (id int, body text);
CREATE TABLE child_passages () INHERITS (parent_passages);
INSERT INTO parent_passages SELECT id, body FROM passages WHERE id <= 20;
INSERT INTO child_passages SELECT id, body FROM passages WHERE id > 20 AND id <= 40;
CREATE TABLE part_passages (id int, body text) PARTITION BY RANGE (id);
CREATE TABLE part_passages_1 PARTITION OF part_passages FOR VALUES FROM (1) TO (21);
CREATE TABLE part_passages_2 PARTITION OF part_passages FOR VALUES FROM (21) TO (41);
INSERT INTO part_passages SELECT id, body FROM passages WHERE id <= 40;
ANALYZE parent_passages, child_passages, part_passages;
SELECT * FROM pg_temp.same_rows($$SELECT id, bge_embed(body, 'all-MiniLM-L6-v2') AS e FROM parent_passages$$);
SELECT * FROM pg_temp.same_rows($$SELECT id, bge_embed(body, 'all-MiniLM-L6-v2') AS e FROM ONLY parent_passages$$);
SELECT * FROM pg_temp.same_rows($$SELECT id, bge_embed(body, 'all-MiniLM-L6-v2') AS e FROM part_passages$$);
DROP TABLE parent_passages, child_passages, part_passages;

-- Row marks (FOR UPDATE/SHARE), cursors, parallel-unsafe functions (nextval): PostgreSQL
-- plans no parallel query at all, nor does the hook.
SELECT * FROM pg_temp.plan($$SELECT bge_embed(body, 'all-MiniLM-L6-v2') FROM passages FOR UPDATE$$);
SELECT * FROM pg_temp.plan($$SELECT bge_embed(body, 'all-MiniLM-L6-v2') FROM passages FOR SHARE$$);
SELECT * FROM pg_temp.plan($$DECLARE c CURSOR FOR SELECT bge_embed(body, 'all-MiniLM-L6-v2') FROM passages$$);
CREATE SEQUENCE passage_seq;
SELECT * FROM pg_temp.plan($$SELECT nextval('passage_seq'), bge_embed(body, 'all-MiniLM-L6-v2') FROM passages$$);
DROP SEQUENCE passage_seq;

-- A parallel-restricted qual (random()) keeps the scan in the leader.
SELECT * FROM pg_temp.plan($$SELECT bge_embed(body, 'all-MiniLM-L6-v2') FROM passages WHERE random() >= 0$$);

-- Temporary tables are in the leader's local buffers, which workers cannot read.
CREATE TEMP TABLE temp_passages AS SELECT * FROM passages;
ANALYZE temp_passages;
SELECT * FROM pg_temp.plan($$SELECT bge_embed(body, 'all-MiniLM-L6-v2') FROM temp_passages$$);
DROP TABLE temp_passages;

-- A relation proved empty, and the parallel_workers storage parameter (0: never in parallel).
SELECT * FROM pg_temp.plan($$SELECT bge_embed(body, 'all-MiniLM-L6-v2') FROM passages WHERE false$$);
ALTER TABLE passages SET (parallel_workers = 0);
SELECT * FROM pg_temp.plan($$SELECT bge_embed(body, 'all-MiniLM-L6-v2') FROM passages$$);
ALTER TABLE passages RESET (parallel_workers);

-- A scan with LATERAL references (here coalesce(s.n, p.id), computed in the scan of p under
-- an outer join) needs the outer row: PostgreSQL plans only a parameterized scan. A parallel
-- scan would compute it without s.n.
SELECT * FROM pg_temp.plan($$
    SELECT s.n, x.m, x.id FROM generate_series(1, 2) AS s(n)
    LEFT JOIN LATERAL (SELECT coalesce(s.n, p.id) AS m, p.id FROM passages p
                       WHERE p.id <= 3 AND bge_embed(p.body, 'all-MiniLM-L6-v2') IS NOT NULL) AS x ON true$$);
SELECT s.n, x.m, x.id FROM generate_series(1, 2) AS s(n)
LEFT JOIN LATERAL (SELECT coalesce(s.n, p.id) AS m, p.id FROM passages p
                   WHERE p.id <= 3 AND bge_embed(p.body, 'all-MiniLM-L6-v2') IS NOT NULL) AS x ON true
ORDER BY s.n, x.id;

-- Row-level security and security-barrier views, as an ordinary role: the policy's quals run
-- in the scan, parallel or not, and a parallel-unsafe policy function keeps the query serial.
CREATE ROLE regress_bge_reader;
CREATE TABLE secret_passages AS SELECT * FROM passages WHERE id <= 40;
ALTER TABLE secret_passages ENABLE ROW LEVEL SECURITY;
CREATE POLICY not_every_third ON secret_passages FOR SELECT USING (id % 3 <> 0);
CREATE FUNCTION passage_visible(id int) RETURNS bool LANGUAGE plpgsql AS $$ BEGIN RETURN id <= 30; END $$;
CREATE TABLE unsafe_policy_passages AS SELECT * FROM passages WHERE id <= 40;
ALTER TABLE unsafe_policy_passages ENABLE ROW LEVEL SECURITY;
CREATE POLICY up_to_30 ON unsafe_policy_passages FOR SELECT USING (passage_visible(id));
CREATE VIEW barrier_passages WITH (security_barrier) AS SELECT * FROM passages WHERE id % 7 = 0;
GRANT SELECT ON secret_passages, unsafe_policy_passages, barrier_passages TO regress_bge_reader;
GRANT CREATE ON SCHEMA public TO regress_bge_reader;
SET ROLE regress_bge_reader;
SELECT * FROM pg_temp.plan($$SELECT bge_embed(body, 'all-MiniLM-L6-v2') FROM secret_passages$$);
SELECT * FROM pg_temp.same_rows($$SELECT id, bge_embed(body, 'all-MiniLM-L6-v2') AS e FROM secret_passages$$);
SELECT * FROM pg_temp.plan($$SELECT bge_embed(body, 'all-MiniLM-L6-v2') FROM unsafe_policy_passages$$);
SELECT * FROM pg_temp.same_rows($$SELECT id, bge_embed(body, 'all-MiniLM-L6-v2') AS e FROM unsafe_policy_passages$$);
SELECT * FROM pg_temp.same_rows($$SELECT id, bge_embed(body, 'all-MiniLM-L6-v2') AS e FROM barrier_passages$$);
RESET ROLE;
REVOKE CREATE ON SCHEMA public FROM regress_bge_reader;
DROP VIEW barrier_passages;
DROP TABLE secret_passages, unsafe_policy_passages;
DROP FUNCTION passage_visible(int);
DROP ROLE regress_bge_reader;
DROP TABLE passages;
