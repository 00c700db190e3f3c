
-- Cosine computed independently in SQL, not with our operator.
CREATE FUNCTION cos_sim(a real[], b real[]) RETURNS float8 LANGUAGE sql IMMUTABLE AS $$
    SELECT sum(x::float8 * y) / (sqrt(sum(x::float8 * x)) * sqrt(sum(y::float8 * y)))
    FROM unnest(a, b) AS t(x, y)
$$;

-- Every text: embedding at cosine >= 0.99999, token ids and counts exactly as sentence-transformers.
SELECT model, count(*) AS texts,
       count(*) FILTER (WHERE cos_sim(bge_embed(body, model), emb) >= 0.99999) AS embeddings_ok,
       count(*) FILTER (WHERE bge_tokenize(body, model) = ids) AS token_ids_ok,
       count(*) FILTER (WHERE bge_token_count(body, model) = cardinality(ids)) AS token_counts_ok
FROM golden GROUP BY model ORDER BY model;

-- Any text below the bar, with its cosine (no rows expected).
SELECT model, i, cos_sim(bge_embed(body, model), emb) AS cosine
FROM golden WHERE cos_sim(bge_embed(body, model), emb) < 0.99999 ORDER BY model, i;

-- The array form: one batched call per model, rows in input order, each equal (bitwise) to
-- the single-text call and to the goldens.
WITH batched AS (
    SELECT g.model, b.ord - 1 AS i, b.emb
    FROM (SELECT DISTINCT model FROM golden) g,
         LATERAL bge_embed((SELECT array_agg(body ORDER BY i) FROM golden WHERE model = g.model), g.model)
             WITH ORDINALITY AS b(emb, ord)
)
SELECT g.model, count(*) AS rows,
       count(*) FILTER (WHERE b.emb = bge_embed(g.body, g.model)) AS equal_to_single,
       count(*) FILTER (WHERE cos_sim(b.emb, g.emb) >= 0.99999) AS embeddings_ok
FROM golden g JOIN batched b USING (model, i) GROUP BY g.model ORDER BY g.model;

DROP TABLE golden;
DROP FUNCTION cos_sim;
