-- bge_chunk(input, model, max_tokens, overlap): a text cut into chunks that each embed without
-- truncation. Every property is checked in SQL from the rows alone: each chunk's tokens are
-- bge_token_count(chunk, model) and within max_tokens, the chunk is substr(input, start_char,
-- end_char - start_char), seq counts from 1, chunks move forward, are trimmed and not blank,
-- and together hold every non-whitespace character of the input; overlapping text stays within
-- the overlap's tokens. Whitespace here is what Rust's char::is_whitespace says, which is \s
-- of PostgreSQL's regular expressions plus U+00A0 and U+0085.

-- One small readable example, without and with overlap.
SELECT * FROM bge_chunk('Hello world. This is a test of the chunker, which cuts text into pieces.', 'all-MiniLM-L6-v2', 8);
SELECT * FROM bge_chunk('Hello world. This is a test of the chunker, which cuts text into pieces.', 'all-MiniLM-L6-v2', 8, 3);

CREATE FUNCTION pg_temp.strip_ws(t text) RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT regexp_replace(t, '[\s\u00a0\u0085]', '', 'g')
$$;

-- The checks of one call; the booleans are true when the property holds for every chunk.
CREATE FUNCTION pg_temp.chunk_checks(body text, m text, max_tokens int, ovl int,
    OUT chunks bigint, OUT exact_tokens bool, OUT within_max bool, OUT substrings bool, OUT seq_ok bool,
    OUT forward bool, OUT trimmed bool, OUT covered bool, OUT overlap_ok bool, OUT overlapping bigint)
LANGUAGE sql AS $$
    WITH c AS (
        SELECT *, lag(start_char) OVER w AS prev_start, lag(end_char) OVER w AS prev_end,
               row_number() OVER w AS n, count(*) OVER () AS total
        FROM bge_chunk(body, m, max_tokens, ovl)
        WINDOW w AS (ORDER BY seq)
    ), lim AS (
        SELECT coalesce(max_tokens, (SELECT b.max_tokens FROM bge_models() b WHERE b.name = m)) AS max_tokens,
               bge_token_count('', m) AS special
    )
    SELECT count(*),
           coalesce(bool_and(tokens = bge_token_count(chunk, m)), true),
           coalesce(bool_and(tokens <= lim.max_tokens), true),
           coalesce(bool_and(chunk = substr(body, start_char, end_char - start_char) AND start_char >= 1 AND end_char <= length(body) + 1), true),
           coalesce(bool_and(seq = n), true),
           coalesce(bool_and(prev_start IS NULL OR (start_char > prev_start AND end_char > prev_end)), true),
           coalesce(bool_and(chunk <> '' AND pg_temp.strip_ws(left(chunk, 1)) <> '' AND pg_temp.strip_ws(right(chunk, 1)) <> ''), true),
           -- Before the first chunk, between chunks and after the last: whitespace only.
           coalesce(bool_and(pg_temp.strip_ws(substr(body, coalesce(prev_end, 1), greatest(start_char - coalesce(prev_end, 1), 0))) = ''
                             AND (n < total OR pg_temp.strip_ws(substr(body, end_char)) = '')), true)
             AND (count(*) > 0 OR pg_temp.strip_ws(coalesce(body, '')) = ''),
           -- Without overlap chunks are disjoint; with it, the text a chunk repeats of the one
           -- before has at most that many tokens (special tokens aside).
           coalesce(bool_and(prev_end IS NULL OR start_char >= prev_end
                             OR (coalesce(ovl, 0) > 0 AND bge_token_count(substr(body, start_char, prev_end - start_char), m) - lim.special <= ovl)), true),
           count(*) FILTER (WHERE start_char < prev_end)
    FROM c, lim
$$;

CREATE TEMP TABLE chunk_texts (name text PRIMARY KEY, body text);
INSERT INTO chunk_texts
-- About 20,000 characters of English in paragraphs, with a word of 160 characters (WordPiece
-- reads a word over 100 characters as one unknown token), tabs and runs of spaces.
SELECT 'english', string_agg('Section ' || i || E'.\n' ||
           repeat('The quick brown fox jumps over the lazy dog. ', 1 + i % 4) ||
           E'Databases store rows,\tcolumns and indexes;   PostgreSQL extensions add functions (like this one)! ' ||
           CASE WHEN i % 5 = 0 THEN repeat('supercalifragilistic', 8) || ' ' ELSE '' END ||
           'Is it done? Not yet: "quoted text" ends here, after ' || i * 37 || ' words.',
           E'\n\n' ORDER BY i)
FROM generate_series(1, 60) AS i
UNION ALL
-- Japanese without spaces (one ideographic space).
SELECT 'cjk', repeat('東京は日本の首都です。人口は約千四百万人で、世界最大級の都市圏を形成しています。', 20) || U&'\3000' ||
              repeat('中文文本没有空格，分块必须在字符之间进行。', 20)
UNION ALL
-- Accents (precomposed and combining), emoji (a skin tone, a ZWJ family), Greek, Cyrillic,
-- a no-break space.
SELECT 'emoji', string_agg('Café naïve résumé ' || U&'e\0301t\00e9' || ' 😀🎉 Ünïcödé façade — crème brûlée 👍🏽 ' ||
           U&'👨\200D👩\200D👧' || ' Ελληνικά κείμενα και русский текст' || U&'\00a0' || i || '.', ' ' ORDER BY i)
FROM generate_series(1, 40) AS i
UNION ALL
-- One word of 3,000 characters: chunks end between tokens.
SELECT 'one_long_word', repeat('abcdefghij', 300)
UNION ALL SELECT 'whitespace', E'  \t\n  \r\n ' || U&'\3000\00a0'
UNION ALL SELECT 'empty', ''
UNION ALL SELECT 'null', NULL;

CREATE TEMP TABLE chunk_params (model text, max_tokens int, overlap int);
INSERT INTO chunk_params VALUES
    ('all-MiniLM-L6-v2', NULL, 0), ('all-MiniLM-L6-v2', 3, 0), ('all-MiniLM-L6-v2', 8, 0),
    ('all-MiniLM-L6-v2', 8, 3), ('all-MiniLM-L6-v2', 32, 0), ('all-MiniLM-L6-v2', 32, 10),
    ('all-MiniLM-L6-v2', 100, 50), ('all-MiniLM-L6-v2', 256, 255),
    ('tiny-bge-m3', NULL, 0), ('tiny-bge-m3', 6, 0), ('tiny-bge-m3', 16, 4), ('tiny-bge-m3', 64, 0),
    ('tiny-bge-m3', 64, 20), ('tiny-bge-m3', 512, 100);

SELECT t.name, p.model, p.max_tokens, p.overlap, c.*
FROM chunk_texts t CROSS JOIN chunk_params p, pg_temp.chunk_checks(t.body, p.model, p.max_tokens, p.overlap) c
ORDER BY t.name, p.model, p.max_tokens NULLS FIRST, p.overlap;

-- Without overlap, the chunks' non-whitespace characters are the text's, in order.
SELECT t.name, p.model, p.max_tokens,
       pg_temp.strip_ws(coalesce(t.body, '')) = coalesce((SELECT string_agg(pg_temp.strip_ws(c.chunk), '' ORDER BY c.seq)
                                                 FROM bge_chunk(t.body, p.model, p.max_tokens) c), '') AS same_characters
FROM chunk_texts t CROSS JOIN chunk_params p
WHERE p.overlap = 0
ORDER BY t.name, p.model, p.max_tokens NULLS FIRST;

-- The texts' tokens, untruncated (bge.truncate reaches the forms without a model): longer
-- than all-MiniLM-L6-v2 takes (256), and the English text longer than tiny-bge-m3 takes (8192).
SET bge.truncate = off;
SELECT name, bge_token_count(body) AS minilm_tokens FROM chunk_texts WHERE name IN ('english', 'emoji', 'cjk') ORDER BY name;
SET bge.model = 'tiny-bge-m3';
SELECT name, bge_token_count(body) AS m3_tokens FROM chunk_texts WHERE name IN ('english', 'emoji', 'cjk') ORDER BY name;
RESET bge.model;
RESET bge.truncate;

-- Defaults: max_tokens NULL or left out is the model's max_seq_length; overlap NULL or left
-- out is 0; a NULL input gives no rows.
SELECT (SELECT array_agg(c ORDER BY seq) FROM bge_chunk(body, 'all-MiniLM-L6-v2') c) =
       (SELECT array_agg(c ORDER BY seq) FROM bge_chunk(body, 'all-MiniLM-L6-v2', 256, 0) c) AS max_tokens_defaulted,
       (SELECT array_agg(c ORDER BY seq) FROM bge_chunk(body, 'all-MiniLM-L6-v2', NULL, NULL) c) =
       (SELECT array_agg(c ORDER BY seq) FROM bge_chunk(body, 'all-MiniLM-L6-v2', 256, 0) c) AS nulls_defaulted,
       (SELECT array_agg(c ORDER BY seq) FROM bge_chunk(body, 'tiny-bge-m3', 40) c) =
       (SELECT array_agg(c ORDER BY seq) FROM bge_chunk(body, 'tiny-bge-m3', 40, NULL) c) AS overlap_defaulted,
       (SELECT max(tokens) FROM bge_chunk(body, 'all-MiniLM-L6-v2') c) AS largest_chunk
FROM chunk_texts WHERE name = 'english';
SELECT count(*) AS null_rows FROM bge_chunk(NULL, 'all-MiniLM-L6-v2', 16, 4);
SELECT count(*) AS named_args FROM bge_chunk(input => 'one two three four five six', model => 'all-MiniLM-L6-v2', overlap => 1, max_tokens => 4);

-- Each chunk embeds without truncation: with bge.truncate = off a text over the limit is an
-- error, and the vector equals the named model's (which truncates).
SET bge.truncate = off;
SELECT t.name, count(*) AS chunks,
       bool_and(bge_embed(c.chunk) = bge_embed(c.chunk, 'all-MiniLM-L6-v2')) AS same_vectors
FROM chunk_texts t, bge_chunk(t.body, 'all-MiniLM-L6-v2') c
WHERE t.name IN ('english', 'emoji', 'cjk')
GROUP BY t.name ORDER BY t.name;
SET bge.model = 'tiny-bge-m3';
SELECT t.name, count(*) AS chunks,
       bool_and(bge_embed(c.chunk) = bge_embed(c.chunk, 'tiny-bge-m3')) AS same_vectors
FROM chunk_texts t, bge_chunk(t.body, 'tiny-bge-m3', 700) c
WHERE t.name IN ('english', 'emoji', 'cjk')
GROUP BY t.name ORDER BY t.name;
RESET bge.model;
RESET bge.truncate;

-- Chunks use the room they have: all but a text's last chunk hold at least half max_tokens.
SELECT model, max_tokens, overlap, bool_and(tokens * 2 >= coalesce(max_tokens, 256)) FILTER (WHERE seq < total) AS half_full
FROM (SELECT p.*, c.seq, c.tokens, count(*) OVER (PARTITION BY p.max_tokens, p.overlap) AS total
      FROM chunk_texts t CROSS JOIN chunk_params p, bge_chunk(t.body, p.model, p.max_tokens, p.overlap) c
      WHERE t.name = 'english' AND p.model = 'all-MiniLM-L6-v2') s
GROUP BY model, max_tokens, overlap ORDER BY max_tokens NULLS FIRST, overlap;

-- Bad arguments: SQLSTATE, message and hint.
CREATE FUNCTION pg_temp.error_of(query text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    hint text;
BEGIN
    EXECUTE query;
    RETURN 'no error';
EXCEPTION WHEN OTHERS OR query_canceled THEN
    GET STACKED DIAGNOSTICS hint = PG_EXCEPTION_HINT;
    RETURN SQLSTATE || ' ' || SQLERRM || coalesce(' HINT: ' || nullif(hint, ''), '');
END $$;
SELECT q, pg_temp.error_of(q) FROM unnest(ARRAY[
    $$SELECT * FROM bge_chunk('text', NULL)$$,
    $$SELECT * FROM bge_chunk(NULL, NULL)$$,
    $$SELECT * FROM bge_chunk('text', 'all-MiniLM-L6-v2', 2)$$,
    $$SELECT * FROM bge_chunk('text', 'all-MiniLM-L6-v2', 0)$$,
    $$SELECT * FROM bge_chunk('text', 'all-MiniLM-L6-v2', -5)$$,
    $$SELECT * FROM bge_chunk('text', 'all-MiniLM-L6-v2', 257)$$,
    $$SELECT * FROM bge_chunk('text', 'tiny-bge-m3', 8193)$$,
    $$SELECT * FROM bge_chunk('text', 'all-MiniLM-L6-v2', 16, -1)$$,
    $$SELECT * FROM bge_chunk('text', 'all-MiniLM-L6-v2', 16, 16)$$,
    $$SELECT * FROM bge_chunk('text', 'all-MiniLM-L6-v2', NULL, 300)$$,
    $$SELECT * FROM bge_chunk(NULL, 'all-MiniLM-L6-v2', 2)$$,
    $$SELECT * FROM bge_chunk('ab 中文', 'tiny-bge-m3', 3)$$
]) AS q;
SELECT pg_temp.error_of($$SELECT * FROM bge_chunk('text', 'no-such-model')$$) LIKE '42704 model "no-such-model" is not installed%' AS unknown_model;
SELECT pg_temp.error_of($$SELECT * FROM bge_chunk('text', 'broken-no-tokenizer')$$) ~ '^58P01 ' AS no_tokenizer;
SELECT pg_temp.error_of($$SELECT * FROM bge_chunk('text', 'all-MiniLM-L6-v2', 4)$$) AS fits;

-- Cancellable: statement_timeout stops chunking 25 MB of text long before it ends.
SET statement_timeout = '200ms';
SELECT pg_temp.error_of($$SELECT count(*) FROM bge_chunk(repeat('word ', 5000000), 'all-MiniLM-L6-v2', 8)$$);
RESET statement_timeout;

-- Volatility, strictness, parallel safety, cost, result columns.
SELECT p.oid::regprocedure, p.provolatile, p.proisstrict, p.proparallel, p.procost, p.proretset,
       pg_get_function_arguments(p.oid) AS arguments, pg_get_function_result(p.oid) AS result
FROM pg_proc p WHERE p.proname = 'bge_chunk';

-- The decoders (a directory of their own): byte-fallback and byte-level BPE tokenizers.
SELECT set_config('bge.model_dir', current_setting('bge.model_dir') || '/decoders', false) IS NOT NULL AS decoders_dir;
SELECT t.name, m.model, p.max_tokens, p.overlap, c.*
FROM chunk_texts t, unnest(ARRAY['tiny-gemma2', 'tiny-qwen3']) AS m(model),
     (VALUES (NULL::int, 0), (5, 0), (16, 4)) AS p(max_tokens, overlap),
     pg_temp.chunk_checks(t.body, m.model, p.max_tokens, p.overlap) c
WHERE t.name IN ('english', 'cjk', 'emoji', 'empty')
ORDER BY t.name, m.model, p.max_tokens NULLS FIRST, p.overlap;
