-- pg_bge public SQL beyond the generated function definitions: operators and documentation.

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

COMMENT ON FUNCTION bge_embed(text) IS
    'Embedding of the text with the model named by bge.model, as sentence-transformers computes it (pooled, normalised when the model says so). IMMUTABLE: usable in generated columns.';
COMMENT ON FUNCTION bge_embed(text, text) IS
    'Embedding of the text (first argument) with the named model (a directory under bge.model_dir).';
COMMENT ON FUNCTION bge_embed(text[], text) IS
    'Embeddings of every element of the array, in input order, computed in batched forward passes; NULL elements give NULL rows; model NULL means bge.model.';
COMMENT ON FUNCTION bge_embed_query(text) IS
    'Embedding of a search query: the model''s query instruction (config_sentence_transformers.json prompts, or its model card''s) is prepended; without one, equals bge_embed.';
COMMENT ON FUNCTION bge_embed_query(text, text) IS
    'bge_embed_query with the named model.';
COMMENT ON FUNCTION bge_token_count(text) IS
    'Number of tokens the model embeds for the text, special tokens included: at most max_seq_length when bge.truncate is on, the full count when off.';
COMMENT ON FUNCTION bge_token_count(text, text) IS
    'bge_token_count with the named model.';
COMMENT ON FUNCTION bge_tokenize(text) IS
    'Token ids the model embeds for the text, special tokens included (truncated as bge.truncate says).';
COMMENT ON FUNCTION bge_tokenize(text, text) IS
    'bge_tokenize with the named model.';
COMMENT ON FUNCTION bge_models() IS
    'Models installed under bge.model_dir: architecture, dimensions, max tokens, pooling, normalisation, device, whether this backend has loaded it and how long that took, or why it cannot be read.';
COMMENT ON FUNCTION bge_cosine_distance(real[], real[]) IS
    '1 - cosine similarity; the <=> operator. Errors on different lengths or NULL elements.';
COMMENT ON FUNCTION bge_negative_inner_product(real[], real[]) IS
    'Negative inner product; the <#> operator (smaller is more similar).';
COMMENT ON FUNCTION bge_l2_distance(real[], real[]) IS
    'Euclidean distance; the <-> operator.';
COMMENT ON OPERATOR <=> (real[], real[]) IS 'cosine distance (bge_cosine_distance)';
COMMENT ON OPERATOR <#> (real[], real[]) IS 'negative inner product (bge_negative_inner_product)';
COMMENT ON OPERATOR <-> (real[], real[]) IS 'Euclidean distance (bge_l2_distance)';
