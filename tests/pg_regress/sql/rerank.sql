-- bge_rerank: cross-encoder rerankers (the tiny ones in bge.model_dir/rerankers, beside an
-- embedder). Scores against the references are in rerank_goldens; here: the SQL contract.
SELECT set_config('bge.model_dir', current_setting('bge.model_dir') || '/rerankers', false) IS NOT NULL AS rerankers_dir;
SELECT name, kind, architecture, dimensions, max_tokens, pooling FROM bge_models() ORDER BY name;

-- The single form: a float8 logit; normalize applies FlagReranker's sigmoid.
SELECT round(bge_rerank('capital of France', 'Paris is the capital of France.', 'tiny-reranker-xlmr')::numeric, 4) AS xlmr,
       round(bge_rerank('capital of France', 'Paris is the capital of France.', 'tiny-reranker-bert')::numeric, 4) AS bert;
-- (normalize is an SQL keyword: as a named argument it is quoted.)
SELECT abs(bge_rerank('q', 'p', 'tiny-reranker-bert', "normalize" => true)
           - 1 / (1 + exp(-bge_rerank('q', 'p', 'tiny-reranker-bert')))) < 1e-15 AS sigmoid,
       bge_rerank('q', 'p', 'tiny-reranker-bert', true) = bge_rerank('q', 'p', 'tiny-reranker-bert', "normalize" => true) AS positional;
-- STRICT: a NULL gives NULL.
SELECT bge_rerank(NULL, 'p', 'tiny-reranker-bert') IS NULL AS null_query, bge_rerank('q', NULL::text, 'tiny-reranker-bert') IS NULL AS null_passage;

-- The array form: input order, NULL elements give NULL, each score bitwise the single form's.
SELECT n, x IS NULL AS is_null, x = bge_rerank('capital of France', p, 'tiny-reranker-xlmr') AS bitwise
FROM unnest(ARRAY['Paris is the capital of France.', NULL, 'Berlin', '', 'the capital']) WITH ORDINALITY u(p, n)
JOIN bge_rerank('capital of France', ARRAY['Paris is the capital of France.', NULL, 'Berlin', '', 'the capital'], 'tiny-reranker-xlmr')
     WITH ORDINALITY r(x, m) ON m = n
ORDER BY n;
SELECT count(*) AS empty_array FROM bge_rerank('q', ARRAY[]::text[], 'tiny-reranker-bert');
SELECT count(*) AS null_array FROM bge_rerank('q', NULL::text[], 'tiny-reranker-bert');
SELECT count(*) AS all_null FROM bge_rerank('q', ARRAY[NULL, NULL]::text[], 'tiny-reranker-bert') x WHERE x IS NULL;
-- IMMUTABLE: usable in an index expression.
CREATE TEMP TABLE faq (q text, a text);
INSERT INTO faq VALUES ('capital of France', 'Paris'), ('capital of Germany', 'Berlin');
CREATE INDEX ON faq ((bge_rerank(q, a, 'tiny-reranker-bert')));
SELECT count(*) FROM faq;

-- The wrong kind of model, an unknown one: clear errors (22023, 42704).
CREATE FUNCTION pg_temp.sqlstate(query text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE query;
    RETURN 'no error';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE;
END $$;
SELECT bge_embed('text', 'tiny-reranker-xlmr');
SELECT bge_rerank('q', 'p', 'all-MiniLM-L6-v2');
SELECT bge_rerank('q', ARRAY['p'], 'tiny-bge-m3');
SELECT bge_rerank('q', 'p', 'no-such-reranker');
CREATE TABLE rerank_docs (id int PRIMARY KEY, body text, emb real[]);
SELECT bge_vectorize('rerank_docs', 'body', 'emb', 'tiny-reranker-bert');
CALL bge_backfill('rerank_docs', 'body', 'emb', 'tiny-reranker-bert');
SELECT bge_vectorize_chunks('rerank_docs', 'body', 'rerank_chunks', 'tiny-reranker-bert', embedding_type => 'real[]');
DROP TABLE rerank_docs;
SELECT pg_temp.sqlstate($$SELECT bge_embed('text', 'tiny-reranker-xlmr')$$) AS embed_reranker,
       pg_temp.sqlstate($$SELECT bge_rerank('q', 'p', 'all-MiniLM-L6-v2')$$) AS rerank_embedder,
       pg_temp.sqlstate($$SELECT bge_rerank('q', 'p', 'no-such-reranker')$$) AS unknown;

-- Long inputs are cut by FlagReranker's rule (3/4 of 512 for the query, the rest for the
-- passage), never refused.
SELECT bge_rerank(repeat('query words ', 2000), repeat('passage words ', 5000), 'tiny-reranker-xlmr') IS NOT NULL AS long_pair;
RESET bge.model_dir;
