-- <=> cosine distance, <#> negative inner product, <-> Euclidean distance on real[].
SELECT '{1,0}'::real[] <=> '{0,1}'::real[] AS orthogonal,
       round(('{1,2}'::real[] <=> '{2,4}'::real[])::numeric, 12) AS parallel,
       '{1,2,3}'::real[] <#> '{4,5,6}'::real[] AS neg_inner,
       '{0,0}'::real[] <-> '{3,4}'::real[] AS euclid;
SELECT '{1,2}'::real[] <=> NULL AS null_right, NULL <-> '{1,2}'::real[] AS null_left;
-- Rounding never leaves [0, 2]; a zero vector has no cosine distance (an error, not NaN), but
-- inner product and Euclidean distance are defined for it.
SELECT '{0.1,0.2,0.3}'::real[] <=> '{0.1,0.2,0.3}'::real[] AS self_distance,
       round(('{1,1}'::real[] <=> '{-1,-1}'::real[])::numeric, 12) AS opposite;
SELECT '{0,0}'::real[] <=> '{1,2}'::real[];
SELECT '{0,0}'::real[] <#> '{1,2}'::real[] AS zero_inner, '{0,0}'::real[] <-> '{3,4}'::real[] AS zero_l2;
-- Embeddings are one-dimensional: a 2-D array is not compared as if flat.
SELECT '{{1,2},{3,4}}'::real[] <=> '{1,2,3,4}'::real[];
SELECT '{1,2,3,4}'::real[] <-> '{{1,2},{3,4}}'::real[];

-- Against an independent computation in SQL on random vectors of awkward lengths.
SELECT setseed(0.42);
CREATE TEMP TABLE vecs AS
SELECT v.i, n, array_agg((random() - 0.5)::real ORDER BY j) AS a, array_agg((random() - 0.5)::real ORDER BY j) AS b
FROM generate_series(1, 60) AS v(i), LATERAL (SELECT 1 + (v.i * 37) % 1537 AS n) AS len, generate_series(1, len.n) AS j
GROUP BY v.i, n;
WITH expected AS (
    SELECT i, sum(x::float8 * y) AS dot, sqrt(sum(x::float8 * x)) AS na, sqrt(sum(y::float8 * y)) AS nb,
           sqrt(sum((x::float8 - y) ^ 2)) AS l2
    FROM vecs, unnest(a, b) AS t(x, y) GROUP BY i
)
SELECT count(*) AS pairs,
       count(*) FILTER (WHERE abs((a <=> b) - (1 - dot / (na * nb))) < 1e-9) AS cosine_ok,
       count(*) FILTER (WHERE abs((a <#> b) + dot) < 1e-9) AS inner_ok,
       count(*) FILTER (WHERE abs((a <-> b) - l2) < 1e-9) AS l2_ok,
       count(*) FILTER (WHERE (a <=> b) = bge_cosine_distance(a, b) AND (a <#> b) = bge_negative_inner_product(a, b)
                        AND (a <-> b) = bge_l2_distance(a, b)) AS operators_are_functions
FROM vecs JOIN expected USING (i);

-- Ranking with embeddings.
CREATE TEMP TABLE passages (id int, body text);
INSERT INTO passages VALUES
    (1, 'Paris is the capital and largest city of France.'),
    (2, 'The mitochondria is the powerhouse of the cell.'),
    (3, 'PostgreSQL is an open-source relational database.'),
    (4, 'Berlin is the capital of Germany.'),
    (5, 'Photosynthesis converts light into chemical energy.');
SELECT id, body FROM passages ORDER BY bge_embed(body) <=> bge_embed('What is the capital of France?') LIMIT 2;
SELECT id FROM passages ORDER BY bge_embed(body) <#> bge_embed('relational databases') LIMIT 1;
SELECT id FROM passages ORDER BY bge_embed(body) <-> bge_embed('how plants make energy from sunlight') LIMIT 1;

-- Errors: different lengths, NULL elements.
SELECT '{1,2}'::real[] <=> '{1,2,3}'::real[];
SELECT '{1,NULL}'::real[] <#> '{1,2}'::real[];
SELECT '{1,2}'::real[] <-> '{1,NULL}'::real[];
