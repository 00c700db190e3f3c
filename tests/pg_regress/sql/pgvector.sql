-- pg_bge with pgvector (PostgreSQL 18 only; scripts/test.sh): embeddings cast to vector,
-- halfvec and sparsevec, kept in generated columns and searched through HNSW indexes.
-- Only the explicit-model forms of bge_embed / bge_embed_query are IMMUTABLE (the one-argument
-- forms read bge.model), so those are the ones generated columns and indexes use.
CREATE EXTENSION vector;

-- A RAG table over 2,000 real passages (paragraphs of the Python documentation; made by
-- benches/make_rag_corpus.py), embedded on insert by the generated column.
CREATE TABLE rag (
    id serial PRIMARY KEY,
    body text NOT NULL,
    emb vector(384) GENERATED ALWAYS AS (bge_embed(body, 'all-MiniLM-L6-v2')::vector(384)) STORED
);
\getenv abs_srcdir PG_ABS_SRCDIR
\set corpus `cat :'abs_srcdir'/../../benches/rag_corpus.txt`
INSERT INTO rag (body) SELECT line FROM regexp_split_to_table(rtrim(:'corpus', E'\n'), E'\n') AS line;
SELECT count(*) AS passages, count(emb) AS embedded, min(vector_dims(emb)) AS dims,
       bool_and(abs(vector_norm(emb) - 1) < 1e-5) AS unit_length
FROM rag;
-- The stored vector is the real[] embedding, element for element.
SELECT count(*) FILTER (WHERE emb::real[] = bge_embed(body, 'all-MiniLM-L6-v2')) AS equal_to_real_array
FROM rag WHERE id % 100 = 0;

CREATE INDEX rag_emb_hnsw ON rag USING hnsw (emb vector_cosine_ops);
ANALYZE rag;

-- Plans, without the query vectors that constant folding writes into them.
CREATE FUNCTION pg_temp.plan(query text) RETURNS SETOF text LANGUAGE plpgsql AS $$
DECLARE
    line text;
BEGIN
    FOR line IN EXECUTE 'EXPLAIN (COSTS OFF) ' || query LOOP
        RETURN NEXT regexp_replace(line, '''[[{][^'']*''', '<query vector>', 'g');
    END LOOP;
END $$;

-- A search: the query's embedding cast to vector(384) makes <=> pgvector's cosine distance,
-- which the HNSW index serves.
SELECT pg_temp.plan($$
    SELECT id FROM rag
    ORDER BY emb <=> bge_embed_query('How do I read a file line by line?', 'all-MiniLM-L6-v2')::vector(384)
    LIMIT 10 $$) AS plan;
-- Without the cast, vector's implicit cast to real[] picks pg_bge's real[] <=> instead: the
-- same ranking, computed row by row without the index.
SELECT pg_temp.plan($$
    SELECT id FROM rag
    ORDER BY emb <=> bge_embed_query('How do I read a file line by line?', 'all-MiniLM-L6-v2')
    LIMIT 10 $$) AS plan;

-- Relevant passages come first: the top 3 for a question all mention what it asks about.
SELECT q, bool_and(body ILIKE '%' || word || '%') AS top_3_mention_it
FROM (VALUES ('How do I read a file line by line?', 'line'), ('How can I compress data with gzip?', 'gzip'),
             ('How do I log messages to a file?', 'log'), ('What is a decorator?', 'decorator')) AS v(q, word),
     LATERAL (SELECT body FROM rag ORDER BY emb <=> bge_embed_query(v.q, 'all-MiniLM-L6-v2')::vector(384) LIMIT 3) AS hits
GROUP BY q ORDER BY q;

-- Recall@10 of the index against the exact ranking, over 25 questions.
CREATE TABLE questions (
    qid int PRIMARY KEY,
    q text NOT NULL,
    qemb vector(384) GENERATED ALWAYS AS (bge_embed_query(q, 'all-MiniLM-L6-v2')::vector(384)) STORED
);
INSERT INTO questions (qid, q) VALUES
    (1, 'How do I read a file line by line?'),
    (2, 'What happens when an exception is raised inside a finally clause?'),
    (3, 'How are default argument values evaluated?'),
    (4, 'What does the with statement do?'),
    (5, 'How do I sort a list of dictionaries by a key?'),
    (6, 'How can I run a shell command and capture its output?'),
    (7, 'What is the difference between a list and a tuple?'),
    (8, 'How do generators and the yield expression work?'),
    (9, 'How do I parse command line arguments?'),
    (10, 'What is a decorator?'),
    (11, 'How does Python compare objects for equality?'),
    (12, 'How do I create a temporary directory?'),
    (13, 'How do I send an email message?'),
    (14, 'How do I convert a date to a string in a given format?'),
    (15, 'What does the global statement mean?'),
    (16, 'How are integer division and the modulo operator defined?'),
    (17, 'How do I make a thread wait until another one finishes?'),
    (18, 'How can I compress data with gzip?'),
    (19, 'How does attribute lookup on a class instance work?'),
    (20, 'How do I open a network socket connection?'),
    (21, 'What is the method resolution order of a class?'),
    (22, 'How can I serialize Python objects to JSON?'),
    (23, 'How do I match text with a regular expression?'),
    (24, 'How does the import system find modules?'),
    (25, 'How do I log messages to a file?');
ANALYZE questions;

-- One index search per question (the planner chooses the index itself).
SELECT pg_temp.plan($$
    SELECT qid, id FROM questions, LATERAL (SELECT id FROM rag ORDER BY emb <=> qemb LIMIT 10) AS top $$) AS plan;
CREATE TEMP TABLE approx AS
SELECT qid, id FROM questions, LATERAL (SELECT id FROM rag ORDER BY emb <=> qemb LIMIT 10) AS top;
-- The exact top 10: every distance computed and sorted.
SET enable_indexscan = off;
SELECT pg_temp.plan($$
    SELECT qid, id FROM questions, LATERAL (SELECT id FROM rag ORDER BY emb <=> qemb LIMIT 10) AS top $$) AS plan;
CREATE TEMP TABLE exact AS
SELECT qid, id FROM questions, LATERAL (SELECT id FROM rag ORDER BY emb <=> qemb LIMIT 10) AS top;
RESET enable_indexscan;
SELECT count(DISTINCT qid) AS questions, count(*) AS exact_results,
       count(a.id) / count(*)::numeric >= 0.95 AS recall_at_10_at_least_0_95
FROM exact e LEFT JOIN approx a USING (qid, id);

-- pgvector's <=> equals pg_bge's real[] <=> (bge_cosine_distance) on the same embeddings
-- (emb::real[] is bge_embed's result, as checked above), for every passage and question.
SELECT count(*) AS pairs,
       max(abs((r.emb <=> q.qemb) - bge_cosine_distance(r.emb::real[], q.qemb::real[]))) < 1e-6 AS within_1e_6
FROM rag r, questions q;

-- halfvec, half the index size: an expression index over the vector column's halfvec cast
-- (nothing is embedded twice). Distances stay within fp16 rounding of the vector ones and
-- the index finds the same neighbours. bge_embed casts to halfvec directly too.
CREATE INDEX rag_emb_halfvec_hnsw ON rag USING hnsw ((emb::halfvec(384)) halfvec_cosine_ops);
SELECT count(*) FILTER (WHERE bge_embed(body, 'all-MiniLM-L6-v2')::halfvec(384) = emb::halfvec(384)) AS direct_cast_equal
FROM rag WHERE id % 100 = 0;
SELECT max(abs((r.emb::halfvec(384) <=> q.qemb::halfvec(384)) - (r.emb <=> q.qemb))) < 1e-3 AS within_fp16_rounding
FROM rag r, questions q;
SELECT pg_temp.plan($$
    SELECT qid, id FROM questions,
           LATERAL (SELECT id FROM rag ORDER BY emb::halfvec(384) <=> qemb::halfvec(384) LIMIT 10) AS top $$) AS plan;
CREATE TEMP TABLE approx_halfvec AS
SELECT qid, id FROM questions,
       LATERAL (SELECT id FROM rag ORDER BY emb::halfvec(384) <=> qemb::halfvec(384) LIMIT 10) AS top;
SELECT count(a.id) / count(*)::numeric >= 0.95 AS halfvec_recall_at_10_at_least_0_95
FROM exact e LEFT JOIN approx_halfvec a USING (qid, id);

-- BGE-M3 sparse weights as sparsevec (the tiny random-weight model: a 579-token vocabulary).
-- a <#> b is minus BGE-M3's lexical matching score: the sum over shared token ids of the
-- products of the two weights, computed here independently from bge_sparse_text's id:weight pairs.
CREATE TABLE m3docs (
    id int PRIMARY KEY,
    body text NOT NULL,
    sparse sparsevec(579) GENERATED ALWAYS AS (bge_sparse_text(body, 'tiny-bge-m3')::sparsevec(579)) STORED
);
INSERT INTO m3docs SELECT id, body FROM rag WHERE id <= 200;
SELECT count(*) AS docs, bool_and(nnz > 0) AS all_have_weights,
       bool_and(sparse::text = bge_sparse_text(body, 'tiny-bge-m3')::sparsevec::text) AS text_round_trips
FROM (SELECT body, sparse, (SELECT count(*) FROM regexp_matches(sparse::text, '(\d+):', 'g')) AS nnz FROM m3docs) AS d;
CREATE FUNCTION pg_temp.weights(t text) RETURNS TABLE (idx int, w float8) LANGUAGE sql IMMUTABLE AS $$
    SELECT m[1]::int, m[2]::float8 FROM regexp_matches(t, '(\d+):([^,}]+)', 'g') AS m
$$;
WITH d AS MATERIALIZED (SELECT id, sparse, bge_sparse_text(body, 'tiny-bge-m3') AS t FROM m3docs),
     q AS MATERIALIZED (SELECT qid, bge_sparse_text(q, 'tiny-bge-m3') AS t FROM questions WHERE qid <= 5),
scores AS (
    SELECT d.sparse <#> q.t::sparsevec(579) AS neg_ip,
           (SELECT coalesce(sum(a.w * b.w), 0) FROM pg_temp.weights(d.t) AS a JOIN pg_temp.weights(q.t) AS b USING (idx)) AS lexical
    FROM d, q
)
SELECT count(*) AS pairs, count(*) FILTER (WHERE lexical > 0) > 0 AS some_share_tokens,
       max(abs(neg_ip + lexical) / greatest(1, abs(lexical))) < 1e-5 AS neg_inner_product_is_lexical_score
FROM scores;
-- Sparse ranking through pgvector's HNSW on sparsevec (inner product). On 200 rows the planner
-- prefers a sequential scan, so it is switched off to show the index is usable.
CREATE INDEX m3docs_sparse_hnsw ON m3docs USING hnsw (sparse sparsevec_ip_ops);
SET enable_seqscan = off;
SELECT pg_temp.plan($$
    SELECT id FROM m3docs ORDER BY sparse <#> bge_sparse_text('read a file', 'tiny-bge-m3')::sparsevec(579) LIMIT 5 $$) AS plan;
RESET enable_seqscan;

-- bge_backfill and bge_vectorize into pgvector columns (real[] is assigned through pgvector's
-- casts); a vector(n) of the wrong width is refused up front.
CREATE TABLE vdocs (id int PRIMARY KEY, body text, emb vector(384), half halfvec(384), wrong vector(768));
INSERT INTO vdocs SELECT g, 'vector passage ' || g FROM generate_series(1, 120) g;
SET client_min_messages = warning;
CALL bge_backfill('vdocs', 'body', 'emb', batch_tokens => 300);
CALL bge_backfill('vdocs', 'body', 'half');
RESET client_min_messages;
SELECT count(emb) AS filled, count(*) FILTER (WHERE emb = bge_embed(body)::vector) AS bitwise_equal,
       count(*) FILTER (WHERE half = bge_embed(body)::halfvec) AS halfvec_equal FROM vdocs;
CALL bge_backfill('vdocs', 'body', 'wrong');
SELECT bge_vectorize('vdocs', 'body', 'emb');
INSERT INTO vdocs (id, body) SELECT g, 'vector passage ' || g FROM generate_series(121, 180) g;
UPDATE vdocs SET body = body || ' edited' WHERE id % 4 = 0;
DO $$
BEGIN
    FOR i IN 1..1200 LOOP
        EXIT WHEN NOT EXISTS (SELECT FROM bge_vectorize_status() WHERE pending > 0);
        PERFORM pg_sleep(0.1);
    END LOOP;
END $$;
SELECT count(*) AS rows, count(*) FILTER (WHERE emb = bge_embed(body)::vector) AS bitwise_equal FROM vdocs;
SELECT bge_unvectorize('vdocs');
DROP TABLE vdocs;

DROP TABLE m3docs, questions, rag;
DROP EXTENSION vector;
