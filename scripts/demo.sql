CREATE EXTENSION IF NOT EXISTS pg_bge;

SELECT name, architecture, dimensions, max_tokens, pooling, normalize, device, isa, precision FROM bge_models();

-- One embedding (first 8 of its 384 numbers).
SELECT (bge_embed('Paris is the capital of France'))[1:8] AS first_dims;

-- A RAG table whose embeddings stay in sync through a generated column.
DROP TABLE IF EXISTS demo_docs;
CREATE TABLE demo_docs (
    id serial PRIMARY KEY,
    body text NOT NULL,
    emb real[] GENERATED ALWAYS AS (bge_embed(body, 'all-MiniLM-L6-v2')) STORED
);
INSERT INTO demo_docs (body) VALUES
    ('Paris is the capital and most populous city of France.'),
    ('The Eiffel Tower was completed in 1889 for the World''s Fair.'),
    ('PostgreSQL is a powerful, open source object-relational database system.'),
    ('Photosynthesis lets plants turn sunlight into chemical energy.'),
    ('Berlin is the capital of Germany and its largest city.'),
    ('A generated column is computed from other columns of the same row.');

-- Rank by cosine distance to a query.
SELECT id, round((emb <=> bge_embed_query('Which city is the capital of France?'))::numeric, 4) AS distance, body
FROM demo_docs ORDER BY emb <=> bge_embed_query('Which city is the capital of France?') LIMIT 3;

SELECT id, body FROM demo_docs ORDER BY emb <=> bge_embed('databases') LIMIT 1;
