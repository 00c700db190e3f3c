-- Retrieve, then rerank (PostgreSQL 18 with pgvector; scripts/test.sh): the two queries of
-- docs/rag.md#reranking, with the tiny models of bge.model_dir/rerankers standing in for the
-- real ones (all-MiniLM-L6-v2 for dense retrieval, tiny-bge-m3 for BGE-M3, the tiny
-- rerankers for bge-reranker-base and bge-reranker-v2-m3). The tiny rerankers' weights are
-- random, so what is checked is the queries' shape: the index serves the candidates, the
-- reranked rows are those candidates, ordered by their bge_rerank scores.
CREATE EXTENSION IF NOT EXISTS vector;
SELECT set_config('bge.model_dir', current_setting('bge.model_dir') || '/rerankers', false) IS NOT NULL AS rerankers_dir;
CREATE TABLE docs (
    id int PRIMARY KEY,
    body text NOT NULL,
    emb vector(384) GENERATED ALWAYS AS (bge_embed(body, 'all-MiniLM-L6-v2')::vector(384)) STORED,
    m3_emb vector(32) GENERATED ALWAYS AS (bge_embed(body, 'tiny-bge-m3')::vector(32)) STORED,
    m3_lex sparsevec(579) GENERATED ALWAYS AS (bge_sparse_text(body, 'tiny-bge-m3')::sparsevec(579)) STORED
);
\getenv abs_srcdir PG_ABS_SRCDIR
\set corpus `head -300 :'abs_srcdir'/../../benches/rag_corpus.txt`
INSERT INTO docs (id, body) SELECT n, line FROM regexp_split_to_table(rtrim(:'corpus', E'\n'), E'\n') WITH ORDINALITY AS t(line, n);
CREATE INDEX ON docs USING hnsw (emb vector_cosine_ops);
CREATE INDEX ON docs USING hnsw (m3_emb vector_cosine_ops);
CREATE INDEX ON docs USING hnsw (m3_lex sparsevec_ip_ops);
ANALYZE docs;
SET enable_seqscan = off;  -- 300 rows: the plans below are the index plans a large table gets

-- 1. Two stages: the 100 nearest passages through HNSW, reranked in one batched call.
CREATE TEMP TABLE two_stage AS
WITH candidates AS (
    SELECT id, body FROM docs
    ORDER BY emb <=> bge_embed_query('How do I read a file line by line?', 'all-MiniLM-L6-v2')::vector(384)
    LIMIT 100
), batch AS (
    SELECT array_agg(id ORDER BY id) AS ids, array_agg(body ORDER BY id) AS bodies FROM candidates
)
SELECT batch.ids[r.n] AS id, r.score
FROM batch, bge_rerank('How do I read a file line by line?', batch.bodies, 'tiny-reranker-bert') WITH ORDINALITY AS r(score, n)
ORDER BY r.score DESC
LIMIT 10;
SELECT count(*) AS reranked,
       count(*) FILTER (WHERE t.score = bge_rerank('How do I read a file line by line?', d.body, 'tiny-reranker-bert')) AS scores_are_bge_rerank,
       count(*) FILTER (WHERE t.id IN (SELECT id FROM docs ORDER BY emb <=> bge_embed_query('How do I read a file line by line?', 'all-MiniLM-L6-v2')::vector(384) LIMIT 100)) AS among_candidates,
       min(t.score) >= (SELECT max(bge_rerank('How do I read a file line by line?', c.body, 'tiny-reranker-bert'))
                        FROM (SELECT id, body FROM docs ORDER BY emb <=> bge_embed_query('How do I read a file line by line?', 'all-MiniLM-L6-v2')::vector(384) LIMIT 100) c
                        WHERE c.id NOT IN (SELECT id FROM two_stage)) AS best_ten
FROM two_stage t JOIN docs d USING (id);
CREATE FUNCTION pg_temp.index_scans(query text) RETURNS SETOF text LANGUAGE plpgsql AS $$
DECLARE
    line text;
BEGIN
    FOR line IN EXECUTE 'EXPLAIN (COSTS OFF) ' || query LOOP
        IF line LIKE '%Index Scan using%' THEN
            RETURN NEXT regexp_replace(line, '^[ ->]*', '');
        END IF;
    END LOOP;
END $$;
SELECT pg_temp.index_scans($$SELECT id, body FROM docs
    ORDER BY emb <=> bge_embed_query('q', 'all-MiniLM-L6-v2')::vector(384) LIMIT 100$$) AS candidates_scan;

-- 2. Hybrid: BGE-M3 dense and lexical candidates fused by reciprocal-rank fusion, then reranked.
CREATE TEMP TABLE hybrid AS
WITH dense AS (
    SELECT id, row_number() OVER (ORDER BY distance) AS rank FROM (
        SELECT id, m3_emb <=> bge_embed_query('read a file', 'tiny-bge-m3')::vector(32) AS distance FROM docs
        ORDER BY m3_emb <=> bge_embed_query('read a file', 'tiny-bge-m3')::vector(32) LIMIT 50) d
), lexical AS (
    SELECT id, row_number() OVER (ORDER BY neg_score) AS rank FROM (
        SELECT id, m3_lex <#> bge_sparse_text('read a file', 'tiny-bge-m3')::sparsevec(579) AS neg_score FROM docs
        ORDER BY m3_lex <#> bge_sparse_text('read a file', 'tiny-bge-m3')::sparsevec(579) LIMIT 50) l
), fused AS (
    SELECT id, sum(1.0 / (60 + rank)) AS rrf FROM (SELECT * FROM dense UNION ALL SELECT * FROM lexical) both_lists
    GROUP BY id ORDER BY rrf DESC, id LIMIT 30
), batch AS (
    SELECT array_agg(f.id ORDER BY f.id) AS ids, array_agg(d.body ORDER BY f.id) AS bodies FROM fused f JOIN docs d USING (id)
)
SELECT batch.ids[r.n] AS id, r.score
FROM batch, bge_rerank('read a file', batch.bodies, 'tiny-reranker-xlmr') WITH ORDINALITY AS r(score, n)
ORDER BY r.score DESC
LIMIT 10;
SELECT count(*) AS reranked,
       count(*) FILTER (WHERE h.score = bge_rerank('read a file', d.body, 'tiny-reranker-xlmr')) AS scores_are_bge_rerank
FROM hybrid h JOIN docs d USING (id);
SELECT pg_temp.index_scans($$SELECT id FROM docs ORDER BY m3_emb <=> bge_embed_query('q', 'tiny-bge-m3')::vector(32) LIMIT 50$$) AS dense_scan,
       pg_temp.index_scans($$SELECT id FROM docs ORDER BY m3_lex <#> bge_sparse_text('q', 'tiny-bge-m3')::sparsevec(579) LIMIT 50$$) AS lexical_scan;
RESET enable_seqscan;
DROP TABLE docs;
RESET bge.model_dir;
