-- pg_bge demo (scripts/demo.sh). With pgvector (PostgreSQL 18 here) the embeddings live in a
-- vector(384) column behind an HNSW index; without it (PostgreSQL 15) in a real[] column,
-- ranked by pg_bge's own <=> operator.
CREATE EXTENSION IF NOT EXISTS pg_bge;
SELECT EXISTS (SELECT FROM pg_available_extensions WHERE name = 'vector') AS have_pgvector \gset

SELECT name, architecture, dimensions, max_tokens, pooling, normalize, device, isa, precision FROM bge_models();

-- One embedding (first 8 of its 384 numbers).
SELECT (bge_embed('Paris is the capital of France', 'all-MiniLM-L6-v2'))[1:8] AS first_dims;

-- A RAG table whose embeddings stay in sync through a generated column. The model is named
-- explicitly: that form of bge_embed is IMMUTABLE, as generated columns require.
DROP TABLE IF EXISTS demo_docs;
\if :have_pgvector
CREATE EXTENSION IF NOT EXISTS vector;
CREATE TABLE demo_docs (
    id serial PRIMARY KEY,
    body text NOT NULL,
    emb vector(384) GENERATED ALWAYS AS (bge_embed(body, 'all-MiniLM-L6-v2')::vector(384)) STORED
);
\else
CREATE TABLE demo_docs (
    id serial PRIMARY KEY,
    body text NOT NULL,
    emb real[] GENERATED ALWAYS AS (bge_embed(body, 'all-MiniLM-L6-v2')) STORED
);
\endif

-- 500 paragraphs of the Python documentation (benches/rag_corpus.txt), embedded as they load.
\timing on
\copy demo_docs (body) FROM PROGRAM 'head -n 500 benches/rag_corpus.txt'
\timing off
INSERT INTO demo_docs (body) VALUES
    ('Paris is the capital and most populous city of France.'),
    ('PostgreSQL is a powerful, open source object-relational database system.');

\if :have_pgvector
CREATE INDEX demo_docs_emb ON demo_docs USING hnsw (emb vector_cosine_ops);
ANALYZE demo_docs;
-- A table of 500 rows is as quick to scan as to search; from a few thousand rows on, the
-- planner takes the index by itself. Here it is asked to, to show the index at work.
SET enable_seqscan = off;

-- Rank by cosine distance to a question, through the HNSW index. The question's embedding is
-- cast to vector(384) so that <=> is pgvector's operator, the one the index serves.
EXPLAIN (COSTS OFF)
SELECT id FROM demo_docs
ORDER BY emb <=> (SELECT bge_embed_query('How do I read a file line by line?', 'all-MiniLM-L6-v2')::vector(384))
LIMIT 3;
SELECT id, round(distance::numeric, 4) AS distance, left(body, 100) AS passage
FROM (SELECT id, body, emb <=> (SELECT bge_embed_query('How do I read a file line by line?', 'all-MiniLM-L6-v2')::vector(384)) AS distance
      FROM demo_docs ORDER BY distance LIMIT 3) AS hits;
SELECT id, round(distance::numeric, 4) AS distance, left(body, 100) AS passage
FROM (SELECT id, body, emb <=> (SELECT bge_embed_query('Which city is the capital of France?', 'all-MiniLM-L6-v2')::vector(384)) AS distance
      FROM demo_docs ORDER BY distance LIMIT 3) AS hits;
RESET enable_seqscan;
\else
-- Rank by cosine distance to a question (pg_bge's <=> on real[]; no index without pgvector).
SELECT id, round(distance::numeric, 4) AS distance, left(body, 100) AS passage
FROM (SELECT id, body, emb <=> (SELECT bge_embed_query('How do I read a file line by line?', 'all-MiniLM-L6-v2')) AS distance
      FROM demo_docs ORDER BY distance LIMIT 3) AS hits;
SELECT id, round(distance::numeric, 4) AS distance, left(body, 100) AS passage
FROM (SELECT id, body, emb <=> (SELECT bge_embed_query('Which city is the capital of France?', 'all-MiniLM-L6-v2')) AS distance
      FROM demo_docs ORDER BY distance LIMIT 3) AS hits;
\endif

-- Every embedding above was computed by the model server: one copy of the model for all
-- connections, requests of concurrent sessions batched together.
SELECT running, requests, batches, round(tokens_per_s) AS tokens_per_s,
       jsonb_path_query_array(models, '$[*].name') AS models
FROM bge_server_status();
