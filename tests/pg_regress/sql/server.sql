-- The model server (run only in the schedule whose cluster preloads pg_bge, with a small
-- bge.server_slot_size so that requests split and results come back in pieces; see
-- scripts/test.sh). Every entry point gives bitwise the same result through the server as in
-- this backend (bge.server = off), and errors keep their SQLSTATE, message and hint.

SELECT running, pid IS NOT NULL AS has_pid, slots > 0 AS has_slots, slot_bytes, queue_depth, in_flight
FROM bge_server_status();
SELECT name, setting, unit, context FROM pg_settings WHERE name LIKE 'bge.server%' ORDER BY name;

-- Texts of awkward lengths: empty, one word, long ones truncated at max_seq_length.
CREATE TEMP TABLE texts AS
SELECT i AS id,
       CASE WHEN i = 0 THEN '' ELSE left(repeat(md5(i::text) || ' word ' || i || ' ', 1 + (i * 7) % 90), 3000) END AS body
FROM generate_series(0, 79) AS i;

SET bge.server = off;
CREATE TEMP TABLE local AS
SELECT id, bge_embed(body) AS dense, bge_embed_query(body) AS query, bge_embed(body, 'all-MiniLM-L6-v2-cls512') AS cls,
       bge_embed_sparse(body, 'tiny-bge-m3') AS sparse, bge_sparse_text(body, 'tiny-bge-m3') AS sparse_text,
       bge_embed_colbert(body, 'tiny-bge-m3') AS colbert
FROM texts;
CREATE TEMP TABLE local_array AS
SELECT row_number() OVER () AS n, e FROM bge_embed(ARRAY(SELECT body FROM texts ORDER BY id)) AS e;
RESET bge.server;

-- Through the server: one call per row, then the array form (split into several requests).
SELECT count(*) AS texts,
       count(*) FILTER (WHERE l.dense = bge_embed(t.body)) AS dense_equal,
       count(*) FILTER (WHERE l.query = bge_embed_query(t.body)) AS query_equal,
       count(*) FILTER (WHERE l.cls = bge_embed(t.body, 'all-MiniLM-L6-v2-cls512')) AS cls_equal,
       count(*) FILTER (WHERE l.sparse = bge_embed_sparse(t.body, 'tiny-bge-m3')) AS sparse_equal,
       count(*) FILTER (WHERE l.sparse_text = bge_sparse_text(t.body, 'tiny-bge-m3')) AS sparse_text_equal,
       count(*) FILTER (WHERE l.colbert = bge_embed_colbert(t.body, 'tiny-bge-m3')) AS colbert_equal
FROM texts t JOIN local l USING (id);
SELECT count(*) AS rows, count(*) FILTER (WHERE l.e = s.e) AS array_equal
FROM local_array l JOIN (SELECT row_number() OVER () AS n, e FROM bge_embed(ARRAY(SELECT body FROM texts ORDER BY id)) AS e) s USING (n);
-- NULL elements stay NULL rows, in place.
SELECT n, e IS NULL AS is_null FROM (SELECT row_number() OVER () AS n, e FROM bge_embed(ARRAY['a', NULL, 'b']) AS e) s ORDER BY n;
-- A ColBERT result of a long text is larger than a slot: it comes back in pieces.
SELECT array_length(bge_embed_colbert(repeat('many words here ', 400), 'tiny-bge-m3'), 1) AS colbert_rows;

-- The server counted those requests and batched texts.
SELECT requests > 0 AS counted, batches > 0 AS batched, tokens > 0 AS tokens_counted, tokens_per_s > 0 AS has_rate,
       jsonb_path_exists(models, '$[*] ? (@.name == "all-MiniLM-L6-v2" && @.resident_bytes > 0)') AS minilm_resident
FROM bge_server_status();

CREATE TEMP TABLE worker AS SELECT pid FROM bge_server_status();

-- Errors: raised in this backend (tokenising) or by the server, the same either way.
CREATE FUNCTION pg_temp.error_of(query text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    msg text;
    hnt text;
BEGIN
    EXECUTE query;
    RETURN 'no error';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS msg = MESSAGE_TEXT, hnt = PG_EXCEPTION_HINT;
    RETURN SQLSTATE || ': ' || replace(msg, current_setting('bge.model_dir'), '$model_dir') || ' | ' || coalesce(hnt, '');
END $$;
CREATE TEMP TABLE failing (q text);
INSERT INTO failing VALUES
    ($$SELECT bge_embed('x', 'no-such-model')$$),
    ($$SELECT bge_embed('x', 'broken-shapes')$$),
    ($$SELECT bge_embed('x', 'broken-truncated')$$),
    ($$SELECT bge_embed_sparse('x', 'all-MiniLM-L6-v2')$$),
    ($$SELECT bge_embed_colbert('x', 'all-MiniLM-L6-v2')$$),
    ($$SET LOCAL bge.truncate = off; SELECT bge_embed(repeat('word ', 600))$$);
CREATE TEMP TABLE server_errors AS SELECT q, pg_temp.error_of(q) AS e FROM failing;
SET bge.server = off;
SELECT f.q, split_part(s.e, ':', 1) AS sqlstate, s.e = pg_temp.error_of(f.q) AS same_in_process FROM failing f JOIN server_errors s USING (q) ORDER BY f.q;
RESET bge.server;
-- A model that fails to load does not take the server down for the others.
SELECT array_length(bge_embed('still here'), 1) AS dims;
SELECT s.running, s.pid = w.pid AS same_worker FROM bge_server_status() s, worker w;

-- bge_models() shows the server's copies.
SELECT name, loaded, device FROM bge_models() WHERE name IN ('all-MiniLM-L6-v2', 'tiny-bge-m3') ORDER BY name;
