-- Abuse by an ordinary role ends in a clean ERROR or a right answer: memory stays bounded,
-- threads stay bounded, long work is cancellable, IMMUTABLE functions ignore the settings,
-- and the postmaster never restarts.
SELECT pg_postmaster_start_time() AS started \gset
CREATE ROLE regress_bge_abuser;
CREATE FUNCTION pg_temp.error_of(query text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE query;
    RETURN 'no error';
EXCEPTION WHEN OTHERS OR query_canceled THEN
    RETURN SQLSTATE || ' ' || SQLERRM;
END $$;
-- Seconds a query takes, and its error (statement_timeout must stop it long before it ends).
CREATE FUNCTION pg_temp.stopped_after(query text, OUT seconds_under_3 bool, OUT outcome text) LANGUAGE plpgsql AS $$
DECLARE
    t0 timestamptz := clock_timestamp();
BEGIN
    outcome := pg_temp.error_of(query);
    seconds_under_3 := clock_timestamp() - t0 < interval '3 s';
END $$;
CREATE FUNCTION pg_temp.backend_status(field text) RETURNS bigint LANGUAGE sql AS $$
    SELECT (regexp_match(pg_read_file('/proc/' || pg_backend_pid() || '/status'), field || ':\s+(\d+)'))[1]::bigint
$$;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA pg_temp TO regress_bge_abuser;
SET ROLE regress_bge_abuser;

-- Huge texts: only a bounded prefix is tokenised when truncating (a 30 MB text used to need
-- gigabytes); with truncation off the count is exact, read in windows.
SELECT bge_token_count(repeat('a ', 15000000)) AS truncated_count,
       array_length(bge_embed(repeat('a ', 15000000)), 1) AS embedded_dims;
SET bge.truncate = off;
SELECT bge_token_count(repeat('a ', 1000000)) AS full_count;
SELECT pg_temp.error_of($$SELECT bge_embed(repeat('a ', 1000000))$$);
RESET bge.truncate;

-- Settings any user can change are capped.
SET bge.max_batch_tokens = 4194304;
SET bge.max_batch_tokens = 65536;

-- Long work stops at statement_timeout: tokenising (200 MB of text), a huge array, and
-- bge_maxsim on two 3000 x 1024 arrays.
SET statement_timeout = '500ms';
SET bge.truncate = off;
SELECT * FROM pg_temp.stopped_after($$SELECT bge_token_count(repeat('a ', 100000000))$$);
RESET bge.truncate;
SELECT * FROM pg_temp.stopped_after($$SELECT count(*) FROM bge_embed(array_fill(repeat('word ', 300), ARRAY[20000]))$$);
SELECT * FROM pg_temp.stopped_after($$SELECT bge_maxsim(array_fill(0.5::real, ARRAY[3000, 1024]), array_fill(0.25::real, ARRAY[3000, 1024]))$$);
RESET statement_timeout;
RESET bge.max_batch_tokens;

-- Every thread count a user can ask for: the backend keeps one pool, of at most its cores.
SELECT count(*) AS calls FROM generate_series(1, 200) AS k,
    LATERAL (SELECT set_config('bge.threads', k::text, true), bge_embed('thread ' || k)) AS t;
RESET bge.threads;

-- IMMUTABLE functions return the same whatever the bge.* settings (explicit model: always
-- truncated, fp32). STABLE forms follow the settings.
CREATE TEMP TABLE texts AS SELECT * FROM (VALUES ('Paris is the capital of France.'), (repeat('long text ', 400))) AS v(t);
CREATE TEMP TABLE baseline AS
SELECT t, bge_embed(t, 'all-MiniLM-L6-v2') AS e, bge_embed_query(t, 'all-MiniLM-L6-v2') AS q,
       bge_token_count(t, 'all-MiniLM-L6-v2') AS n, bge_token_count_query(t, 'all-MiniLM-L6-v2') AS nq,
       bge_tokenize(t, 'all-MiniLM-L6-v2') AS ids, bge_embed_sparse(t, 'tiny-bge-m3') AS sparse,
       bge_sparse_text(t, 'tiny-bge-m3') AS sparse_text, bge_embed_colbert(t, 'tiny-bge-m3') AS colbert
FROM texts;
CREATE FUNCTION pg_temp.same_as_baseline() RETURNS bool LANGUAGE sql AS $$
    SELECT bool_and(bge_embed(t, 'all-MiniLM-L6-v2') = e AND bge_embed_query(t, 'all-MiniLM-L6-v2') = q
                    AND bge_token_count(t, 'all-MiniLM-L6-v2') = n AND bge_token_count_query(t, 'all-MiniLM-L6-v2') = nq
                    AND bge_tokenize(t, 'all-MiniLM-L6-v2') = ids AND bge_embed_sparse(t, 'tiny-bge-m3') = sparse
                    AND bge_sparse_text(t, 'tiny-bge-m3') = sparse_text AND bge_embed_colbert(t, 'tiny-bge-m3') = colbert
                    AND (SELECT array_agg(x) FROM bge_embed(ARRAY[t], 'all-MiniLM-L6-v2') AS x) = ARRAY[e])
    FROM baseline
$$;
SELECT pg_temp.same_as_baseline() AS defaults;
SET bge.model = 'all-MiniLM-L6-v2-cls512';
SET bge.truncate = off;
SET bge.threads = 1;
SET bge.max_batch_tokens = 7;
SET bge.device = cpu;
SELECT pg_temp.same_as_baseline() AS under_other_settings;
-- bf16 where the CPU has it; elsewhere bge.precision = bf16 affects nothing IMMUTABLE either.
SET bge.precision = bf16;
SELECT pg_temp.same_as_baseline() AS under_bf16;
RESET ALL;

-- A prepared statement over a STABLE form follows bge.model (no plan-time constant).
PREPARE stable_embed AS SELECT bge_embed('which model?') AS e;
CREATE TEMP TABLE plans AS EXECUTE stable_embed;
SET bge.model = 'all-MiniLM-L6-v2-cls512';
CREATE TEMP TABLE plans2 AS EXECUTE stable_embed;
SELECT (SELECT e FROM plans) <> (SELECT e FROM plans2) AS follows_bge_model,
       (SELECT e FROM plans2) = bge_embed('which model?', 'all-MiniLM-L6-v2-cls512') AS equals_named_form;
RESET bge.model;
DEALLOCATE stable_embed;

-- Operators on malformed vectors are errors, not NaN or a flat comparison.
SELECT pg_temp.error_of($$SELECT '{0,0,0}'::real[] <=> '{1,2,3}'::real[]$$);
SELECT pg_temp.error_of($$SELECT '{{1,2},{3,4}}'::real[] <#> '{1,2,3,4}'::real[]$$);

-- Bounded: threads and resident memory of this backend after all of the above, and the
-- server never restarted (a crash would have reset every backend, this one included).
RESET ROLE;
SELECT pg_temp.backend_status('Threads') <= 64 AS threads_bounded,
       pg_temp.backend_status('VmRSS') < 3 * 1024 * 1024 AS rss_under_3gb,
       pg_temp.backend_status('VmHWM') < 4 * 1024 * 1024 AS peak_rss_under_4gb;
SELECT pg_postmaster_start_time() = :'started' AS postmaster_never_restarted;
DROP OWNED BY regress_bge_abuser;
DROP ROLE regress_bge_abuser;
