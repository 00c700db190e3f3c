-- A RAG table keeps its embeddings in a generated column, with the IMMUTABLE form that names
-- its model; the forms that read bge.model are STABLE and refused there.
CREATE TABLE refused (body text, emb real[] GENERATED ALWAYS AS (bge_embed(body)) STORED);
CREATE TABLE docs (
    id int PRIMARY KEY,
    body text,
    emb real[] GENERATED ALWAYS AS (bge_embed(body, 'all-MiniLM-L6-v2')) STORED
);
INSERT INTO docs (id, body)
SELECT i, 'Document ' || i || ' is about ' ||
          (ARRAY['databases and SQL queries', 'cooking pasta and sauces', 'football matches and goals',
                 'stars, planets and telescopes', 'music, guitars and concerts'])[1 + i % 5] ||
          repeat(' with more detail', i % 23)
FROM generate_series(1, 1000) AS i;

SELECT count(*) AS rows, count(emb) AS embedded, min(array_length(emb, 1)) AS min_dims, max(array_length(emb, 1)) AS max_dims
FROM docs;

-- Stored vectors equal a fresh computation, bitwise.
SELECT count(*) AS sampled, count(*) FILTER (WHERE emb = bge_embed(body)) AS equal_to_default_model FROM docs WHERE id % 25 = 0;

-- Nearest neighbours of a document share its topic.
SELECT count(*) AS neighbours, count(*) FILTER (WHERE n.id % 5 = 3) AS same_topic
FROM (SELECT d.id FROM docs d, docs q WHERE q.id = 3 AND d.id <> 3 ORDER BY d.emb <=> q.emb LIMIT 20) AS n;

-- Updates keep the column in sync; NULL bodies give NULL embeddings.
UPDATE docs SET body = 'Paris is the capital of France.' WHERE id = 7;
SELECT id FROM docs ORDER BY emb <=> bge_embed_query('What is the capital of France?') LIMIT 1;
INSERT INTO docs (id, body) VALUES (1001, NULL), (1002, '');
SELECT id, emb IS NULL AS no_embedding, array_length(emb, 1) AS dims FROM docs WHERE id > 1000 ORDER BY id;

-- A parallel scan computes the same vectors.
SET parallel_setup_cost = 0;
SET parallel_tuple_cost = 0;
SET min_parallel_table_scan_size = 0;
SET max_parallel_workers_per_gather = 2;
SELECT count(*) AS rows_recomputed_in_parallel FROM docs WHERE emb = bge_embed(body, 'all-MiniLM-L6-v2') AND id % 10 = 0;
RESET ALL;

-- Session settings cannot make two sessions write different vectors into the column.
SET bge.model = 'all-MiniLM-L6-v2-cls512';
SET bge.truncate = off;
INSERT INTO docs (id, body) VALUES (1003, repeat('long text ', 400));
RESET bge.model;
RESET bge.truncate;
SELECT emb = bge_embed(repeat('long text ', 400), 'all-MiniLM-L6-v2') AS written_with_the_column_model FROM docs WHERE id = 1003;

-- An expression index on the IMMUTABLE token count agrees with a sequential scan.
CREATE INDEX docs_tokens ON docs (bge_token_count(body, 'all-MiniLM-L6-v2'));
CREATE INDEX refused_index ON docs (bge_token_count(body));
SET enable_seqscan = off;
SELECT count(*) AS long_docs_by_index FROM docs WHERE bge_token_count(body, 'all-MiniLM-L6-v2') > 60;
RESET enable_seqscan;
SET enable_indexscan = off;
SET enable_bitmapscan = off;
SELECT count(*) AS long_docs_by_scan FROM docs WHERE bge_token_count(body, 'all-MiniLM-L6-v2') > 60;
RESET ALL;

DROP TABLE docs;
