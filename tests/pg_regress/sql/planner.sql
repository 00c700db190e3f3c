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
DROP TABLE passages, parallel_run, serial_run;
