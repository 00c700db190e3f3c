-- BGE-M3 on the tiny random-weight model (engine/tests/models/tiny-bge-m3, made by
-- scripts/goldens/make_m3_goldens.py): XLM-RoBERTa, the sparse and ColBERT heads, query prompts,
-- inputs of thousands of tokens, and the errors. m3_goldens compares the numbers.

-- Errors as SQLSTATE, message and hint, with the model directory's path left out.
CREATE FUNCTION pg_temp.error_of(query text) RETURNS TABLE (sqlstate text, message text, hint text) LANGUAGE plpgsql AS $$
DECLARE
    msg text;
    hnt text;
BEGIN
    EXECUTE query;
    RETURN QUERY SELECT 'no error'::text, NULL::text, NULL::text;
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS msg = MESSAGE_TEXT, hnt = PG_EXCEPTION_HINT;
    RETURN QUERY SELECT SQLSTATE::text, replace(msg, current_setting('bge.model_dir'), '$model_dir'),
                        replace(hnt, current_setting('bge.model_dir'), '$model_dir');
END $$;

SELECT name, architecture, dimensions, max_tokens, pooling, normalize, error
FROM bge_models() WHERE name LIKE 'tiny-bge-m3%' ORDER BY name;

-- Dense: CLS pooling, normalised, as the directory's sentence-transformers files say.
SELECT array_length(e, 1) AS dims, round(sqrt((SELECT sum(x::float8 * x) FROM unnest(e) AS x))::numeric, 5) AS norm
FROM bge_embed('Paris is the capital of France.', 'tiny-bge-m3') AS e;

-- Tokens: <s> (0) … </s> (2); typed special tokens keep their ids (a literal <pad> is 1).
SELECT bge_tokenize('Paris is the capital of France.', 'tiny-bge-m3') AS ids;
SELECT bge_tokenize('a <pad> b', 'tiny-bge-m3') AS with_pad, bge_tokenize('', 'tiny-bge-m3') AS empty;

-- Query prompt: prompts."query" of config_sentence_transformers.json, prepended to the text;
-- bge_token_count_query counts the tokens bge_embed_query embeds, prompt included.
SELECT bge_embed_query('capital of France', 'tiny-bge-m3')
           = bge_embed('Represent this query for retrieval: capital of France', 'tiny-bge-m3') AS query_gets_prompt,
       bge_embed_query('capital of France', 'tiny-bge-m3') <> bge_embed('capital of France', 'tiny-bge-m3') AS differs_from_passage,
       bge_token_count('capital of France', 'tiny-bge-m3') AS passage_tokens,
       bge_token_count_query('capital of France', 'tiny-bge-m3') AS query_tokens,
       bge_token_count_query('capital of France', 'tiny-bge-m3')
           = bge_token_count('Represent this query for retrieval: capital of France', 'tiny-bge-m3') AS count_includes_prompt;
-- all-MiniLM-L6-v2 has no prompt: query and passage agree; the default model is bge.model.
SELECT bge_token_count_query('capital of France') = bge_token_count('capital of France') AS minilm_no_prompt;
SET bge.model = 'tiny-bge-m3';
SELECT bge_token_count_query('capital of France') AS default_model_query_tokens,
       bge_embed_query('capital of France') = bge_embed_query('capital of France', 'tiny-bge-m3') AS default_model_query;
RESET bge.model;

-- Sparse weights as jsonb {token: weight}: the largest weight per token, special tokens and
-- zero weights left out; keys are token texts (SentencePiece's word-start mark decoded away).
-- Weights are printed rounded: their last digits differ between CPU kernel families.
SELECT key, round(value::numeric, 5) AS weight FROM jsonb_each(bge_embed_sparse('the the the the', 'tiny-bge-m3')) AS repeated;
SELECT count(*) AS entries, bool_and(value::float8 > 0) AS all_positive,
       bool_or(key IN ('<s>', '</s>', '<pad>', '<unk>')) AS has_special
FROM jsonb_each(bge_embed_sparse('<s> Paris <pad> is the capital </s> of <unk> France', 'tiny-bge-m3'));
SELECT bge_embed_sparse('', 'tiny-bge-m3') AS empty, bge_embed_sparse('<pad> <unk> <s>', 'tiny-bge-m3') AS only_special;

-- The same weights by token id, as pgvector's sparsevec text: 1-based indices (id + 1), sorted,
-- over the vocabulary's size.
SELECT regexp_replace(t, ':[^,}]+', ':' || round((regexp_match(t, ':([^,}]+)'))[1]::numeric, 5)) AS repeated,
       bge_sparse_text('', 'tiny-bge-m3') AS empty
FROM bge_sparse_text('the the the the', 'tiny-bge-m3') AS t;
SELECT (regexp_match(bge_sparse_text('the', 'tiny-bge-m3'), '^\{(\d+):'))[1]::int
           = (bge_tokenize('the', 'tiny-bge-m3'))[2] + 1 AS index_is_id_plus_1,
       split_part(bge_sparse_text('Paris is the capital of France.', 'tiny-bge-m3'), '/', 2) AS dimensions;
SELECT (SELECT array_agg(m[1]::int) FROM regexp_matches(t, '(\d+):', 'g') AS m)
           = (SELECT array_agg(m[1]::int ORDER BY m[1]::int) FROM regexp_matches(t, '(\d+):', 'g') AS m) AS sorted,
       (SELECT count(*) FROM regexp_matches(t, '(\d+):', 'g')) = (SELECT count(*) FROM jsonb_object_keys(bge_embed_sparse(b, 'tiny-bge-m3'))) AS same_count
FROM (SELECT b, bge_sparse_text(b, 'tiny-bge-m3') AS t FROM (VALUES ('Paris is the capital of France.')) AS v(b)) AS s;

-- ColBERT: a 2-D real[], one unit-length row per token after <s> (</s> included).
SELECT array_ndims(c) AS ndims, array_length(c, 1) AS rows, array_length(c, 2) AS dims,
       array_length(c, 1) = cardinality(bge_tokenize('Paris is the capital of France.', 'tiny-bge-m3')) - 1 AS rows_are_tokens_after_cls,
       (SELECT round(min(n)::numeric, 5) || '..' || round(max(n)::numeric, 5)
        FROM (SELECT sqrt(sum(c[r][k]::float8 ^ 2)) AS n
              FROM generate_series(1, array_length(c, 1)) AS r, generate_series(1, array_length(c, 2)) AS k GROUP BY r) AS norms) AS row_norms
FROM bge_embed_colbert('Paris is the capital of France.', 'tiny-bge-m3') AS c;
SELECT array_length(bge_embed_colbert('', 'tiny-bge-m3'), 1) AS empty_text_rows;

-- MaxSim, averaged over the query's vectors: a text against itself scores 1; a query scores
-- the same stacked twice (an average, not a sum); 1-D arrays are single vectors. (The tiny
-- model's weights are random, so which document is "relevant" means nothing here.)
SELECT round(bge_maxsim(c, c)::numeric, 6) AS self_score FROM bge_embed_colbert('Paris is the capital of France.', 'tiny-bge-m3') AS c;
SELECT round(bge_maxsim(q, d)::numeric, 10) = round(bge_maxsim(q || q, d)::numeric, 10) AS averaged,
       bge_maxsim(q, d) BETWEEN -1 AND 1 AS in_range,
       bge_maxsim(q, d) <> bge_maxsim(d, q) AS asymmetric
FROM bge_embed_colbert('capital of France', 'tiny-bge-m3') AS q,
     bge_embed_colbert('Paris is the capital of France.', 'tiny-bge-m3') AS d;
SELECT bge_maxsim('{1,0}', '{{0.5,0.5},{1,0}}') AS one_d_query, bge_maxsim('{{1,0},{0,1}}', '{{1,0}}') AS mean_of_1_and_0,
       bge_maxsim('{{1,0},{0,1}}', '{{1,0}}') * array_length('{{1,0},{0,1}}'::real[], 1) AS colbert_sum;

-- NULL in, NULL out.
SELECT bge_embed_sparse(NULL) IS NULL AS sparse, bge_sparse_text(NULL, 'tiny-bge-m3') IS NULL AS sparse_text,
       bge_embed_colbert(NULL) IS NULL AS colbert, bge_maxsim(NULL, '{1}') IS NULL AS maxsim,
       bge_token_count_query(NULL) IS NULL AS count_query, bge_embed_sparse('x', NULL) IS NULL AS null_model;

-- Thousands of tokens: up to 8192 (XLM-R's 8194 positions less pad_token_id + 1), truncated
-- beyond as sentence-transformers does, or an error with bge.truncate off.
SELECT bge_token_count(repeat('the ', 8190), 'tiny-bge-m3') AS at_limit,
       bge_token_count(repeat('the ', 9000), 'tiny-bge-m3') AS truncated,
       array_length(bge_embed_colbert(repeat('the ', 9000), 'tiny-bge-m3'), 1) AS colbert_rows,
       bge_embed(repeat('the ', 9000), 'tiny-bge-m3') = bge_embed(repeat('the ', 8190), 'tiny-bge-m3') AS long_equals_truncation,
       bge_sparse_text(repeat('the ', 9000), 'tiny-bge-m3') = bge_sparse_text(repeat('the ', 8190), 'tiny-bge-m3') AS sparse_too;
SELECT count(*) AS long_docs, min(array_length(e, 1)) AS dims
FROM (SELECT bge_embed(repeat('word' || i || ' the capital of France ', 1000 + 200 * i), 'tiny-bge-m3') AS e FROM generate_series(1, 4) AS i) AS t;
-- bge.truncate applies to the forms that take the model from bge.model (the named forms are
-- IMMUTABLE and always truncate).
SET bge.truncate = off;
SET bge.model = 'tiny-bge-m3';
SELECT bge_token_count(repeat('the ', 9000)) AS full_count,
       bge_token_count(repeat('the ', 9000), 'tiny-bge-m3') AS named_form_truncates;
SELECT * FROM pg_temp.error_of($$SELECT bge_embed_sparse(repeat('the ', 9000))$$);
SELECT * FROM pg_temp.error_of($$SELECT bge_embed_colbert(repeat('the ', 9000))$$);
RESET bge.model;
RESET bge.truncate;

-- Heads that are missing: dense output still works, sparse and ColBERT name the file, and
-- the hint says how to get it.
SELECT array_length(bge_embed('x', 'tiny-bge-m3-unconverted'), 1) AS unconverted_dims,
       array_length(bge_embed('x', 'tiny-bge-m3-dense-only'), 1) AS dense_only_dims;
SELECT * FROM pg_temp.error_of($$SELECT bge_embed_sparse('x', 'tiny-bge-m3-unconverted')$$);
SELECT * FROM pg_temp.error_of($$SELECT bge_sparse_text('x', 'tiny-bge-m3-unconverted')$$);
SELECT * FROM pg_temp.error_of($$SELECT bge_embed_colbert('x', 'tiny-bge-m3-dense-only')$$);
SELECT * FROM pg_temp.error_of($$SELECT bge_embed_sparse('x')$$);
SELECT * FROM pg_temp.error_of($$SELECT bge_embed_sparse('x', 'no-such-model')$$);

-- bge_maxsim on arrays that are not ColBERT output.
SELECT * FROM pg_temp.error_of($$SELECT bge_maxsim('{{1,0}}', '{{1,0,0}}')$$);
SELECT * FROM pg_temp.error_of($$SELECT bge_maxsim(bge_embed_colbert('a', 'tiny-bge-m3'), '{{1,0}}')$$);
SELECT * FROM pg_temp.error_of($$SELECT bge_maxsim('{}', '{{1}}')$$);
SELECT * FROM pg_temp.error_of($$SELECT bge_maxsim('{{{1}}}', '{{1}}')$$);
SELECT * FROM pg_temp.error_of($$SELECT bge_maxsim('{{1,NULL}}', '{{1,0}}')$$);
