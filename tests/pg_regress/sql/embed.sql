-- bge_embed and friends: shapes, NULLs, empty input, the array form, truncation, settings.
SELECT array_length(bge_embed('hello world'), 1) AS dims,
       array_length(bge_embed('hello world', 'all-MiniLM-L6-v2-cls512'), 1) AS dims_cls512;

-- The model is normalised (modules.json has Normalize): unit length.
SELECT round(sqrt(sum(x::float8 * x))::numeric, 5) AS norm FROM unnest(bge_embed('normalised?')) AS x;

-- bge.model names the default model; explicit and default calls agree bitwise.
SELECT bge_embed('same text') = bge_embed('same text', 'all-MiniLM-L6-v2') AS default_is_minilm;
SET bge.model = 'all-MiniLM-L6-v2-cls512';
SELECT bge_embed('same text') = bge_embed('same text', 'all-MiniLM-L6-v2-cls512') AS default_follows_setting;
RESET bge.model;

-- NULL in, NULL out; empty and blank strings embed like any text.
SELECT bge_embed(NULL::text) IS NULL AS null_text, bge_embed('x', NULL) IS NULL AS null_model,
       bge_token_count(NULL) IS NULL AS null_count, bge_tokenize(NULL) IS NULL AS null_tokens;
SELECT array_length(bge_embed(''), 1) AS empty, array_length(bge_embed(E' \t\n'), 1) AS blank,
       bge_tokenize('') AS empty_tokens, bge_token_count('') AS empty_count;

-- Array form: input order, NULL elements give NULL rows, each row equals the single call.
SELECT ord, e IS NULL AS is_null, e = bge_embed(t) AS equals_single
FROM unnest(ARRAY['first', NULL, 'third text', '', 'fifth, a little longer than the others']) WITH ORDINALITY AS u(t, ord)
JOIN bge_embed(ARRAY['first', NULL, 'third text', '', 'fifth, a little longer than the others']) WITH ORDINALITY AS b(e, o) ON o = ord
ORDER BY ord;
SELECT count(*) AS empty_array FROM bge_embed(ARRAY[]::text[]);
SELECT count(*) AS null_array FROM bge_embed(NULL::text[]);
SELECT count(*) AS null_model_means_default FROM bge_embed(ARRAY['a', 'b'], NULL) AS e WHERE e = bge_embed('a') OR e = bge_embed('b');

-- Neither thread count nor batch size changes a single bit.
SET bge.threads = 1;
CREATE TEMP TABLE one_thread AS
    SELECT i, bge_embed('row ' || i || repeat(' padding', i % 17)) AS e FROM generate_series(1, 40) AS i;
SET bge.threads = 2;
SET bge.max_batch_tokens = 37;
SELECT count(*) AS rows, count(*) FILTER (WHERE b.e = o.e) AS bitwise_equal
FROM bge_embed(ARRAY(SELECT 'row ' || i || repeat(' padding', i % 17) FROM generate_series(1, 40) AS i ORDER BY i))
     WITH ORDINALITY AS b(e, i)
JOIN one_thread o USING (i);
RESET bge.threads;
RESET bge.max_batch_tokens;

-- Truncation: with bge.truncate on (default), a long text counts max_seq_length tokens and
-- embeds as its first 256 tokens; off, the count is the full one.
SELECT bge_token_count(repeat('word ', 1000)) AS truncated_count,
       bge_token_count(repeat('word ', 1000), 'all-MiniLM-L6-v2-cls512') AS truncated_count_512,
       cardinality(bge_tokenize(repeat('word ', 1000))) AS truncated_ids;
SELECT bge_embed(repeat('word ', 1000)) = bge_embed(repeat('word ', 254)) AS long_equals_its_truncation;
SET bge.truncate = off;
SELECT bge_token_count(repeat('word ', 1000)) AS full_count, bge_token_count('hello world') AS short_count;
SELECT array_length(bge_embed(repeat('word ', 254)), 1) AS exactly_at_limit;
RESET bge.truncate;

-- Tokens: [CLS] ... [SEP] with the model's WordPiece ids.
SELECT bge_tokenize('Hello, world!') AS ids, bge_token_count('Hello, world!') AS n;

-- bge_embed_query: this model has no query instruction, so it equals bge_embed.
SELECT bge_embed_query('capital of France') = bge_embed('capital of France') AS query_without_prompt;

-- The backend loaded the models it used, once.
SELECT name, loaded, device, load_ms > 0 AS timed FROM bge_models() WHERE NOT name LIKE 'broken%' ORDER BY name;

-- The model runs with a known CPU kernel family, in fp32 by default.
SELECT name, isa IN ('avx512', 'avx2', 'portable') AS isa_known, precision FROM bge_models() WHERE name = 'all-MiniLM-L6-v2';

-- bge.precision = bf16: on CPUs with AVX512-BF16 the linear layers run in bfloat16, within
-- cosine 0.999 of fp32; elsewhere (or with BGE_CPU_ISA below avx512) every call is a clear
-- 0A000 error that says why and what to use instead. Both outcomes print 'bf16 ok', so the
-- expected output does not depend on the machine; scripts/test.sh runs this file once per
-- kernel family the machine has, which exercises both on AVX512-BF16 machines.
CREATE TEMP TABLE fp32 AS SELECT t, bge_embed(t) AS e FROM unnest(ARRAY['precision check', 'Paris is the capital of France.', '']) AS t;
CREATE FUNCTION pg_temp.bf16_outcome() RETURNS text LANGUAGE plpgsql SET bge.precision = bf16 AS $$
DECLARE
    close bool; differs bool; compute text; state text; msg text; hint text;
BEGIN
    SELECT bool_and(1 - (bge_embed(t) <=> e) >= 0.999), bool_or(bge_embed(t) <> e) INTO close, differs FROM fp32;
    SELECT precision || ' on ' || isa INTO compute FROM bge_models() WHERE name = 'all-MiniLM-L6-v2';
    IF close AND differs AND compute = 'bf16 on avx512' THEN
        RETURN 'bf16 ok';
    END IF;
    RETURN format('bf16 ran but close=%s differs=%s compute=%s', close, differs, compute);
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, hint = PG_EXCEPTION_HINT;
    IF state = '0A000' AND msg LIKE 'bf16 precision needs a CPU with AVX512-BF16 and the avx512 kernels; this %'
       AND hint LIKE 'SET bge.precision = fp32 (the default)%' THEN
        RETURN 'bf16 ok';
    END IF;
    RETURN format('bf16 failed: %s %s (hint: %s)', state, msg, hint);
END $$;
SELECT pg_temp.bf16_outcome();
SELECT current_setting('bge.precision') AS precision_restored, bool_and(bge_embed(t) = e) AS fp32_again FROM fp32;

-- bge.precision = int8: every CPU (8-bit weights; VNNI, AVX2 or portable kernels, all bitwise
-- equal), within cosine 0.999 of fp32; a batch gives the vectors of single calls bitwise; the
-- forms that name a model stay fp32.
SET bge.precision = int8;
SELECT bool_and(1 - (bge_embed(t) <=> e) >= 0.999) AS int8_close, bool_or(bge_embed(t) <> e) AS int8_differs,
       bool_and(bge_embed(t, 'all-MiniLM-L6-v2') = e) AS named_model_fp32 FROM fp32;
SELECT precision FROM bge_models() WHERE name = 'all-MiniLM-L6-v2';
SELECT bool_and(r.e = bge_embed(s.a[r.i::int])) AS int8_batch_equals_single, count(*) AS rows
FROM (SELECT array_agg(t ORDER BY t) AS a FROM fp32) AS s, bge_embed(s.a) WITH ORDINALITY AS r(e, i);
RESET bge.precision;
