
-- Comparisons computed independently in SQL, not with pg_bge's functions.
CREATE FUNCTION cos_sim(a real[], b real[]) RETURNS float8 LANGUAGE sql IMMUTABLE AS $$
    SELECT sum(x::float8 * y) / (sqrt(sum(x::float8 * x)) * sqrt(sum(y::float8 * y)))
    FROM unnest(a, b) AS t(x, y)
$$;
-- Largest weight difference between two {token: weight} objects (a missing key weighs 0).
CREATE FUNCTION sparse_error(a jsonb, b jsonb) RETURNS float8 LANGUAGE sql IMMUTABLE AS $$
    SELECT coalesce(max(abs(coalesce(x.value::float8, 0) - coalesce(y.value::float8, 0))), 0)
    FROM jsonb_each(a) AS x FULL JOIN jsonb_each(b) AS y ON x.key = y.key
$$;
-- A sparsevec literal {index:value,...}/dims as (token id, weight) rows: index - 1 = id.
CREATE FUNCTION sparsevec_entries(literal text) RETURNS TABLE (id int, w float8) LANGUAGE sql IMMUTABLE AS $$
    SELECT m[1]::int - 1, m[2]::float8 FROM regexp_matches(literal, '(\d+):([^,}]+)', 'g') AS m
$$;
CREATE FUNCTION sparsevec_error(literal text, ids int[], weights real[]) RETURNS float8 LANGUAGE sql IMMUTABLE AS $$
    SELECT coalesce(max(abs(coalesce(x.w, 0) - coalesce(y.w, 0))), 0)
    FROM sparsevec_entries(literal) AS x FULL JOIN unnest(ids, weights) AS y(id, w) ON x.id = y.id
$$;
-- Weights within 1e-5 (2e-5 for the 7009-token document, where PyTorch's own fp32 result is
-- 1.1e-5 from an f64 evaluation; see engine/tests/m3.rs).
CREATE FUNCTION sparse_tolerance(ids int[]) RETURNS float8 LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN cardinality(ids) > 2048 THEN 2e-5 ELSE 1e-5 END
$$;

CREATE TEMP TABLE m3_got AS
SELECT i, bge_tokenize(body, 'tiny-bge-m3') AS ids, bge_token_count(body, 'tiny-bge-m3') AS n,
       bge_embed(body, 'tiny-bge-m3') AS dense, bge_embed_query(body, 'tiny-bge-m3') AS query,
       bge_embed_sparse(body, 'tiny-bge-m3') AS sparse, bge_sparse_text(body, 'tiny-bge-m3') AS sparse_text,
       bge_embed_colbert(body, 'tiny-bge-m3') AS colbert
FROM m3_golden;

-- Every text: token ids and counts exactly, dense and query embeddings at cosine >= 0.99999
-- (sentence-transformers), sparse weights by token and by id within tolerance and ColBERT
-- shapes (FlagEmbedding).
SELECT count(*) AS texts,
       count(*) FILTER (WHERE x.ids = g.ids AND x.n = cardinality(g.ids)) AS token_ids_ok,
       count(*) FILTER (WHERE cos_sim(x.dense, g.dense) >= 0.99999) AS dense_ok,
       count(*) FILTER (WHERE cos_sim(x.query, g.query) >= 0.99999) AS query_ok,
       count(*) FILTER (WHERE sparse_error(x.sparse, g.sparse) <= sparse_tolerance(g.ids)) AS sparse_ok,
       count(*) FILTER (WHERE sparsevec_error(x.sparse_text, g.sparse_ids, g.sparse_weights) <= sparse_tolerance(g.ids)) AS sparse_text_ok,
       count(*) FILTER (WHERE array_length(x.colbert, 1) = g.colbert_rows AND array_length(x.colbert, 2) = 32) AS colbert_shape_ok,
       max(cardinality(g.ids)) AS longest
FROM m3_golden g JOIN m3_got x USING (i);

-- Any text off the mark (no rows expected).
SELECT g.i, cos_sim(x.dense, g.dense) AS dense, cos_sim(x.query, g.query) AS query,
       sparse_error(x.sparse, g.sparse) AS sparse_error
FROM m3_golden g JOIN m3_got x USING (i)
WHERE cos_sim(x.dense, g.dense) < 0.99999 OR cos_sim(x.query, g.query) < 0.99999
   OR sparse_error(x.sparse, g.sparse) > sparse_tolerance(g.ids)
ORDER BY g.i;

-- ColBERT rows (first and last of each text) at cosine >= 0.99999.
SELECT count(*) AS rows_checked,
       count(*) FILTER (WHERE cos_sim(ARRAY(SELECT unnest(x.colbert[c.row_index + 1:c.row_index + 1][1:32])), c.vec) >= 0.99999) AS rows_ok
FROM m3_golden_colbert c JOIN m3_got x USING (i);

-- FlagEmbedding's ColBERT score (colbert_score) and lexical matching score against bge_maxsim
-- and the inner product of the sparsevec texts.
SELECT s.query, s.passage,
       abs(bge_maxsim(q.colbert, p.colbert) - s.colbert) <= 1e-5 AS colbert_ok,
       abs((SELECT sum(a.w * b.w) FROM sparsevec_entries(q.sparse_text) a JOIN sparsevec_entries(p.sparse_text) b USING (id))
           - s.lexical) <= 1e-5 * greatest(abs(s.lexical), 1) AS lexical_ok
FROM m3_golden_score s JOIN m3_got q ON q.i = s.query JOIN m3_got p ON p.i = s.passage
ORDER BY s.query, s.passage;

DROP TABLE m3_got, m3_golden, m3_golden_colbert, m3_golden_score;
DROP FUNCTION cos_sim, sparse_error, sparsevec_error, sparsevec_entries, sparse_tolerance;
