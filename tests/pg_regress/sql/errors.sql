-- Bad input is an ERROR with a SQLSTATE, a message and a hint, never a crash.
CREATE FUNCTION pg_temp.sqlstate_of(query text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE query;
    RETURN 'no error';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE;
END $$;

-- Unknown model: lists the installed ones and how to fetch more.
SELECT bge_embed('x', 'no-such-model');
SELECT pg_temp.sqlstate_of($$SELECT bge_embed('x', 'no-such-model')$$);
SET bge.model = 'no-such-model';
SELECT bge_embed('x');
RESET bge.model;

-- Names are directory names, never paths.
SELECT bge_embed('x', '../../../etc');
SELECT bge_embed('x', '');
SELECT pg_temp.sqlstate_of($$SELECT bge_embed('x', '../../../etc')$$);

-- Missing or corrupt model files.
SELECT bge_embed('x', 'broken-truncated');
SELECT bge_embed('x', 'broken-shapes');
SELECT bge_embed('x', 'broken-no-tokenizer');
SELECT bge_embed('x', 'broken-config');
SELECT bge_embed('x', 'broken-unsupported');
SELECT bge_embed('x', 'broken-bounds');
SELECT bge_embed('x', 'broken-modules-escape');
SELECT m, pg_temp.sqlstate_of(format('SELECT bge_embed(%L, %L)', 'x', m)) AS sqlstate
FROM unnest(ARRAY['broken-truncated', 'broken-shapes', 'broken-no-tokenizer', 'broken-config', 'broken-unsupported',
                  'broken-bounds', 'broken-modules-escape']) AS m;
SELECT name, error FROM bge_models() WHERE error IS NOT NULL ORDER BY name;

-- A model directory that does not exist.
SET bge.model_dir = '/nonexistent/pg_bge_models';
SELECT bge_embed('x');
SELECT count(*) FROM bge_models();
RESET bge.model_dir;

-- Over-long input with truncation off.
SET bge.truncate = off;
SELECT bge_embed(repeat('word ', 300));
SELECT bge_tokenize(repeat('word ', 300));
SELECT pg_temp.sqlstate_of($$SELECT bge_embed(repeat('word ', 300))$$);
RESET bge.truncate;

-- A device this machine does not have (the test machine has no NVIDIA driver), and values
-- that are not devices.
SET bge.device = cuda;
SELECT bge_embed('x');
-- The GPU computes in fp16: bf16 and int8 are refused there before any GPU is looked for.
SET bge.precision = int8;
SELECT bge_embed('x');
RESET bge.precision;
RESET bge.device;
SET bge.device = tpu;

-- bge.model_dir reads files from disk: superuser only.
CREATE ROLE regress_bge_user;
SET ROLE regress_bge_user;
SET bge.model_dir = '/tmp';
SELECT array_length(bge_embed('ordinary users can embed'), 1) AS dims;
-- Nor does an ordinary role see where the models are: errors name the directory by its
-- setting, and bge_server_status() leaves it out.
SELECT bge_embed('x', 'no-such-model');
SELECT bge_embed('x', 'broken-truncated');
SELECT bge_embed('x', 'broken-no-tokenizer');
SELECT pg_temp.sqlstate_of($$SELECT bge_embed('x', 'no-such-model')$$);
SELECT name, error FROM bge_models() WHERE error IS NOT NULL ORDER BY name;
SELECT count(*) FILTER (WHERE m ? 'dir') AS models_showing_dir
FROM bge_server_status() AS s, jsonb_array_elements(coalesce(s.models, '[]')) AS m;
RESET ROLE;
DROP ROLE regress_bge_user;

-- Cancellation: statement_timeout stops one long call (minutes of work) between layers.
SET statement_timeout = '300ms';
SELECT count(*) FROM bge_embed(ARRAY(SELECT i || repeat(' a long enough text to keep the backend busy', 12) FROM generate_series(1, 5000) AS i));
RESET statement_timeout;

-- After all of the above the backend still works.
SELECT array_length(bge_embed('still alive'), 1) AS dims;

-- Text from a database that is not UTF8 is refused, not misread.
CREATE DATABASE regress_bge_latin1 ENCODING 'LATIN1' TEMPLATE template0 LC_COLLATE 'C' LC_CTYPE 'C';
\c regress_bge_latin1
CREATE EXTENSION pg_bge;
SELECT bge_embed('cafe');
SELECT bge_embed('café');
\c pg_bge_regress
DROP DATABASE regress_bge_latin1;
