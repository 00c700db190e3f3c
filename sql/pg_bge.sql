-- pg_bge public SQL beyond the generated function definitions: operators and documentation.
--
-- Volatility: a function that names its model (bge_embed(text, model), ...) is IMMUTABLE: it
-- always truncates at the model's max_seq_length and computes in fp32, so its result depends
-- only on its arguments and the model's files; use it in generated columns and indexes. The
-- forms without a model read bge.model, bge.truncate and bge.precision, so they are STABLE.

-- Operators on real[] embeddings, sugar over named functions (as pgvector's on vector).
CREATE OPERATOR <=> (
    LEFTARG = real[], RIGHTARG = real[], FUNCTION = bge_cosine_distance, COMMUTATOR = '<=>'
);
CREATE OPERATOR <#> (
    LEFTARG = real[], RIGHTARG = real[], FUNCTION = bge_negative_inner_product, COMMUTATOR = '<#>'
);
CREATE OPERATOR <-> (
    LEFTARG = real[], RIGHTARG = real[], FUNCTION = bge_l2_distance, COMMUTATOR = '<->'
);

-- Planner costs, in cpu_operator_cost units (0.0025 of a sequential page read by default).
-- Measured on a 2-vCPU x86-64 server with all-MiniLM-L6-v2 (benches/sql_bench.sh): an
-- embedding call takes 4-8 ms for a passage, a token count 20-60 us, a 384-wide distance
-- about 0.3 us, bge_maxsim on ColBERT arrays of ~100 rows a few ms. PostgreSQL's units are not
-- time (its built-in operators are ~25 ns for 1 unit), so the numbers keep the ratios, scaled to
-- the range PostgreSQL's own expensive functions use: embedding 20,000 (50 page reads: far above
-- any built-in, so cheap quals run first and a scan of more than a few dozen rows is worth a
-- parallel plan), per returned row of the batched array form 15,000, tokenising 1,000, ColBERT
-- scoring 5,000, distances 10.
ALTER FUNCTION bge_embed(text) COST 20000;
ALTER FUNCTION bge_embed(text, text) COST 20000;
ALTER FUNCTION bge_embed(text[], text) COST 15000 ROWS 100;
ALTER FUNCTION bge_embed_query(text) COST 20000;
ALTER FUNCTION bge_embed_query(text, text) COST 20000;
ALTER FUNCTION bge_embed_query(text, text, text) COST 20000;
ALTER FUNCTION bge_embed_sparse(text) COST 20000;
ALTER FUNCTION bge_embed_sparse(text, text) COST 20000;
ALTER FUNCTION bge_sparse_text(text) COST 20000;
ALTER FUNCTION bge_sparse_text(text, text) COST 20000;
ALTER FUNCTION bge_embed_colbert(text) COST 20000;
ALTER FUNCTION bge_embed_colbert(text, text) COST 20000;
ALTER FUNCTION bge_token_count(text) COST 1000;
ALTER FUNCTION bge_token_count(text, text) COST 1000;
ALTER FUNCTION bge_token_count_query(text) COST 1000;
ALTER FUNCTION bge_token_count_query(text, text) COST 1000;
ALTER FUNCTION bge_tokenize(text) COST 1000;
ALTER FUNCTION bge_tokenize(text, text) COST 1000;
ALTER FUNCTION bge_maxsim(real[], real[]) COST 5000;
ALTER FUNCTION bge_cosine_distance(real[], real[]) COST 10;
ALTER FUNCTION bge_negative_inner_product(real[], real[]) COST 10;
ALTER FUNCTION bge_l2_distance(real[], real[]) COST 10;
ALTER FUNCTION bge_models() ROWS 10;
ALTER FUNCTION bge_server_status() ROWS 1;

-- The planner support function of the embedding and tokenising functions: it answers no
-- request, but calling it loads pg_bge while a query is planned, in time for the hook that
-- lets small tables get parallel embedding scans (src/planner.rs).
CREATE FUNCTION bge_planner_support(internal) RETURNS internal
    LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'bge_planner_support';
COMMENT ON FUNCTION bge_planner_support(internal) IS
    'Planner support function of pg_bge''s embedding functions (loads the library during planning); not for direct use.';
DO $$
DECLARE
    f regprocedure;
BEGIN
    FOR f IN SELECT p.oid::regprocedure FROM pg_proc p
             WHERE p.proname IN ('bge_embed', 'bge_embed_query', 'bge_embed_sparse', 'bge_sparse_text', 'bge_embed_colbert',
                                 'bge_token_count', 'bge_token_count_query', 'bge_tokenize')
               AND p.pronamespace = (SELECT pronamespace FROM pg_proc WHERE proname = 'bge_planner_support')
    LOOP
        EXECUTE format('ALTER FUNCTION %s SUPPORT bge_planner_support', f);
    END LOOP;
END $$;

COMMENT ON FUNCTION bge_embed(text) IS
    'Embedding of the text with the model named by bge.model, as sentence-transformers computes it (pooled, normalised when the model says so), following the session''s bge.truncate and bge.precision. STABLE: for generated columns and indexes use bge_embed(text, model).';
COMMENT ON FUNCTION bge_embed(text, text) IS
    'Embedding of the text (first argument) with the named model (a directory under bge.model_dir): always truncated at the model''s max_seq_length and computed in fp32, whatever the bge.* settings. IMMUTABLE: usable in generated columns and expression indexes.';
COMMENT ON FUNCTION bge_embed(text[], text) IS
    'Embeddings of every element of the array, in input order, computed in batched forward passes; NULL elements give NULL rows. A named model gives bitwise the vectors of bge_embed(text, model); model NULL means bge.model with the session''s settings, as bge_embed(text).';
COMMENT ON FUNCTION bge_embed_query(text) IS
    'Embedding of a search query: the model''s query prompt is prepended, as sentence-transformers'' encode_query does (config_sentence_transformers.json prompts."query"; without one, the instruction its BGE model card documents); without any, equals bge_embed.';
COMMENT ON FUNCTION bge_embed_query(text, text) IS
    'bge_embed_query with the named model; IMMUTABLE, as bge_embed(text, text). Decoder embedders (bge-multilingual-gemma2) get their model card''s default retrieval instruction: <instruct>Given a web search query, retrieve relevant passages that answer the query.\n<query>{query}.';
COMMENT ON FUNCTION bge_embed_query(text, text, text) IS
    'bge_embed_query(query, model, instruction): the query phrased for another task. Decoder embedders wrap the instruction in their query template (<instruct>{instruction}\n<query>{query} for the BGE decoders); for encoders the instruction is prepended as is. IMMUTABLE.';
COMMENT ON FUNCTION bge_token_count(text) IS
    'Number of tokens bge.model embeds for the text, special tokens included: at most max_seq_length when bge.truncate is on, the full count when off (counted in windows of the text, so any length is fine).';
COMMENT ON FUNCTION bge_token_count(text, text) IS
    'Number of tokens the named model embeds for the text (at most its max_seq_length), whatever the settings; IMMUTABLE.';
COMMENT ON FUNCTION bge_token_count_query(text) IS
    'Number of tokens bge_embed_query embeds for the text: the query prompt''s tokens included (truncated as bge.truncate says).';
COMMENT ON FUNCTION bge_token_count_query(text, text) IS
    'bge_token_count_query with the named model (truncated, whatever the settings); IMMUTABLE.';
COMMENT ON FUNCTION bge_tokenize(text) IS
    'Token ids the model embeds for the text, special tokens included (truncated as bge.truncate says).';
COMMENT ON FUNCTION bge_tokenize(text, text) IS
    'bge_tokenize with the named model (truncated, whatever the settings); IMMUTABLE.';
COMMENT ON FUNCTION bge_embed_sparse(text) IS
    'BGE-M3 sparse (lexical) weights of the text as jsonb {token: weight}: relu(sparse_linear(hidden state)) per token, the largest per token id, cls/eos/pad/unk tokens and zero weights left out. Keys are the token texts FlagEmbedding''s convert_id_to_token gives; ids that decode to the same text share a key (the later id''s weight wins, as there), so score with bge_sparse_text, which keeps ids. Needs the model''s sparse_linear head.';
COMMENT ON FUNCTION bge_embed_sparse(text, text) IS
    'bge_embed_sparse with the named model (truncated, whatever the settings); IMMUTABLE.';
COMMENT ON FUNCTION bge_sparse_text(text) IS
    'BGE-M3 sparse weights by token id as pgvector''s sparsevec text {id+1:weight,...}/vocab_size (pgvector indices are 1-based): cast with ::sparsevec; the inner product of two is BGE-M3''s lexical matching score.';
COMMENT ON FUNCTION bge_sparse_text(text, text) IS
    'bge_sparse_text with the named model (truncated, whatever the settings); IMMUTABLE.';
COMMENT ON FUNCTION bge_embed_colbert(text) IS
    'BGE-M3 ColBERT vectors of the text: a 2-D real[] with one L2-normalised colbert_linear(hidden state) row per token after the first (the <s> token is left out, the closing </s> kept), as FlagEmbedding computes them. Needs the model''s colbert_linear head.';
COMMENT ON FUNCTION bge_embed_colbert(text, text) IS
    'bge_embed_colbert with the named model (truncated, whatever the settings); IMMUTABLE.';
COMMENT ON FUNCTION bge_maxsim(real[], real[]) IS
    'Late-interaction (MaxSim) score of a query''s ColBERT vectors against a document''s: for each query row the largest dot product with any document row, averaged over the query rows (FlagEmbedding''s colbert_score; multiply by array_length(query, 1) for the plain sum). A 1-D array is one vector. Errors (SQLSTATE 22000) when the vector widths differ.';
COMMENT ON FUNCTION bge_models() IS
    'Models installed under bge.model_dir: architecture, dimensions, max tokens, pooling, normalisation, device, CPU kernel family (isa: avx512, avx2 or portable; NULL on a GPU) and linear-layer precision (fp32, bf16; fp16 on a GPU), whether it is loaded (by the model server when it computes for this session, else by this backend) and how long that took, or why it cannot be read.';
COMMENT ON FUNCTION bge_server_status() IS
    'The model server (shared_preload_libraries = ''pg_bge''): whether it runs, its pid, start time and uptime, request slots, requests waiting and in flight, requests, forward passes (batches) and texts per pass since it started, tokens and tokens/s, and the models it holds (device, precision, resident bytes, load time) as jsonb. One row with running = false when pg_bge is not preloaded.';
COMMENT ON FUNCTION bge_cosine_distance(real[], real[]) IS
    '1 - cosine similarity; the <=> operator. Errors on different lengths, NULL elements, arrays of more than one dimension, and zero vectors (their cosine is undefined).';
COMMENT ON FUNCTION bge_negative_inner_product(real[], real[]) IS
    'Negative inner product; the <#> operator (smaller is more similar).';
COMMENT ON FUNCTION bge_l2_distance(real[], real[]) IS
    'Euclidean distance; the <-> operator.';
COMMENT ON OPERATOR <=> (real[], real[]) IS 'cosine distance (bge_cosine_distance)';
COMMENT ON OPERATOR <#> (real[], real[]) IS 'negative inner product (bge_negative_inner_product)';
COMMENT ON OPERATOR <-> (real[], real[]) IS 'Euclidean distance (bge_l2_distance)';
