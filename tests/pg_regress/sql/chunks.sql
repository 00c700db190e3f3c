-- Chunk tables: bge_vectorize_chunks keeps a table of chunks equal to bge_chunk(source, ...) for
-- every row, under inserts, updates and deletes, and the vectorizer fills each chunk's embedding
-- with bge_embed(chunk, model) bitwise. Searching the chunks finds a passage deep inside a long
-- document that the document's own (truncated) embedding misses.
CREATE FUNCTION pg_temp.wait_chunks() RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    FOR i IN 1..1200 LOOP
        IF NOT EXISTS (SELECT FROM bge_vectorize_status() WHERE pending > 0) THEN
            RETURN 'caught up';
        END IF;
        PERFORM pg_sleep(0.1);
    END LOOP;
    RETURN 'still pending after 120 s';
END $$;
-- Rows of the chunk table that differ from bge_chunk of the documents, both ways.
CREATE FUNCTION pg_temp.chunk_mismatches(max_tokens int, overlap int) RETURNS bigint LANGUAGE plpgsql AS $$
BEGIN
    RETURN (SELECT count(*) FROM (
        (SELECT b.id, c.seq, c.chunk, c.start_char, c.end_char, c.tokens FROM books b, bge_chunk(b.body, 'all-MiniLM-L6-v2', max_tokens, overlap) c
         EXCEPT SELECT id, seq, chunk, start_char, end_char, tokens FROM book_chunks)
        UNION ALL
        (SELECT id, seq, chunk, start_char, end_char, tokens FROM book_chunks
         EXCEPT SELECT b.id, c.seq, c.chunk, c.start_char, c.end_char, c.tokens FROM books b, bge_chunk(b.body, 'all-MiniLM-L6-v2', max_tokens, overlap) c)) d);
END $$;
CREATE FUNCTION pg_temp.sqlstate_of(statement text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE statement;
    RETURN 'no error';
EXCEPTION WHEN others THEN
    RETURN SQLSTATE;
END $$;

-- Twenty long documents on different subjects; the needle is deep inside number 7.
CREATE TABLE books (id int PRIMARY KEY, title text, body text);
INSERT INTO books
SELECT g, 'book ' || g,
       string_agg(format('Chapter %s of the %s handbook. The %s is described in detail here, with its history, its parts and its care. '
                         'Readers learn how the %s changed over the years and why people still value it today.%s',
                         p, s, s, s, CASE WHEN p % 3 = 0 THEN E'\n\n' ELSE ' ' END)
                  || CASE WHEN g = 7 AND p = 28 THEN 'The lighthouse keeper hid the spare key to the lantern room under the third loose stone of the seawall. ' ELSE '' END,
                  '' ORDER BY p)
FROM generate_series(1, 20) g,
     LATERAL (SELECT (ARRAY['garden', 'bicycle', 'violin', 'kitchen', 'sailboat', 'telescope', 'orchard', 'printing press',
                            'clock', 'loom', 'bridge', 'kiln', 'beehive', 'compass', 'windmill', 'typewriter', 'camera',
                            'canoe', 'lantern', 'piano'])[g] AS s) subject,
     generate_series(1, 40) p
GROUP BY g, s;
SELECT count(*) AS books, min(length(body)) > 8000 AS all_long, position('lighthouse' IN (SELECT body FROM books WHERE id = 7)) > 5000 AS needle_deep FROM books;

-- Mistakes are refused before anything is made.
SELECT pg_temp.sqlstate_of($$SELECT bge_vectorize_chunks('books', 'body', 'book_chunks', 'no-such-model')$$) AS unknown_model;
SELECT bge_vectorize_chunks('books', 'body', 'book_chunks', 'all-MiniLM-L6-v2', 100000);
SELECT bge_vectorize_chunks('books', 'body', 'book_chunks', 'all-MiniLM-L6-v2', 64, 64);
SELECT bge_vectorize_chunks('books', 'nope', 'book_chunks', 'all-MiniLM-L6-v2');
SELECT bge_vectorize_chunks('books', 'body', 'book_chunks', 'all-MiniLM-L6-v2', embedding_type => 'text; DROP TABLE books');
CREATE TABLE no_key (body text);
SELECT bge_vectorize_chunks('no_key', 'body', 'no_key_chunks', 'all-MiniLM-L6-v2');
CREATE TABLE wrong_chunks (id int, seq int, chunk text);
SELECT bge_vectorize_chunks('books', 'body', 'wrong_chunks', 'all-MiniLM-L6-v2');
SELECT count(*) AS made_nothing FROM pg_class WHERE relname IN ('book_chunks', 'no_key_chunks');

-- The chunk table, its trigger, and the chunks of the rows already there.
SELECT bge_vectorize_chunks('books', 'body', 'book_chunks', 'all-MiniLM-L6-v2', 64, 8);
SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull FROM pg_attribute a
WHERE a.attrelid = 'book_chunks'::regclass AND a.attnum > 0 ORDER BY a.attnum;
SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = 'book_chunks'::regclass AND contype IN ('p', 'f') ORDER BY 1;
SELECT bge_vectorize_chunks('books', 'body', 'book_chunks', 'all-MiniLM-L6-v2', 64, 8);
SELECT pg_temp.chunk_mismatches(64, 8) AS mismatches, min(tokens) > 0 AND max(tokens) <= 64 AS sizes_ok FROM book_chunks;

-- The sync function is not PUBLIC's and keeps book_chunks in sync with books only: fired from
-- another table it refuses. A table of another role is never reused as a chunk table.
CREATE ROLE bge_chunks_stranger;
SELECT has_function_privilege('bge_chunks_stranger', 'book_chunks_bge_sync()', 'EXECUTE') AS stranger_may_execute,
       (SELECT proowner::regrole = relowner::regrole FROM pg_proc, pg_class WHERE proname = 'book_chunks_bge_sync' AND relname = 'books') AS owned_by_books_owner;
CREATE TABLE decoy (id int, body text);
CREATE TRIGGER decoy_sync AFTER INSERT ON decoy FOR EACH ROW EXECUTE FUNCTION book_chunks_bge_sync();
INSERT INTO decoy VALUES (1, 'planted text');
DROP TABLE decoy;
CREATE TABLE stranger_chunks (id int, seq int, chunk text, start_char int, end_char int, tokens int, embedding real[], PRIMARY KEY (id, seq));
ALTER TABLE stranger_chunks OWNER TO bge_chunks_stranger;
SELECT bge_vectorize_chunks('books', 'body', 'stranger_chunks', 'all-MiniLM-L6-v2');
DROP TABLE stranger_chunks;
DROP ROLE bge_chunks_stranger;
-- A bge_chunk overload planted in the extension's schema, which an untyped NULL max_tokens
-- would prefer, is never what the sync function calls.
CREATE FUNCTION public.bge_chunk(input text, model text, max_tokens text, overlap int)
RETURNS TABLE (seq int, chunk text, start_char int, end_char int, tokens int)
LANGUAGE sql AS $$ SELECT 1, 'planted'::text, 1, 2, 3 $$;
CREATE TABLE notes (id int PRIMARY KEY, body text);
INSERT INTO notes VALUES (1, 'A first note.');
SELECT bge_vectorize_chunks('notes', 'body', 'note_chunks', 'all-MiniLM-L6-v2');
INSERT INTO notes VALUES (2, 'A second note, written later.');
SELECT count(*) FILTER (WHERE chunk = 'planted') AS planted_chunks, count(*) AS chunks FROM note_chunks;
SELECT bge_unvectorize('notes');
DROP TABLE note_chunks, notes;
DROP FUNCTION public.bge_chunk(text, text, text, int);

-- Writes: inserts, an edit at the end (the earlier chunks keep their embeddings), a rewrite,
-- a text set NULL, deletes, a key change.
SELECT pg_temp.wait_chunks();
CREATE TEMP TABLE before_edit AS SELECT seq, embedding FROM book_chunks WHERE id = 3;
UPDATE books SET body = body || ' An epilogue added later.' WHERE id = 3;
SELECT count(*) FILTER (WHERE c.embedding IS NOT DISTINCT FROM b.embedding) AS kept,
       count(*) FILTER (WHERE c.embedding IS NULL) AS queued
FROM book_chunks c JOIN before_edit b USING (seq) WHERE c.id = 3;
INSERT INTO books VALUES (21, 'short', 'A short text.'), (22, 'empty', ''), (23, 'none', NULL);
UPDATE books SET body = 'Rewritten entirely. ' || repeat('New words here. ', 40) WHERE id = 5;
UPDATE books SET body = NULL WHERE id = 6;
DELETE FROM books WHERE id IN (8, 21);
UPDATE books SET id = 100 WHERE id = 9;
UPDATE books SET title = 'renamed' WHERE id = 10;
SELECT pg_temp.wait_chunks();
SELECT pg_temp.chunk_mismatches(64, 8) AS mismatches;
SELECT count(*) AS chunks, count(*) FILTER (WHERE embedding = bge_embed(chunk, 'all-MiniLM-L6-v2')) AS bitwise_equal FROM book_chunks;
SELECT tbl, source, target, model, pending, failed FROM bge_vectorize_status();

-- Search: rank documents by their best chunk. The needle lies far past the 256 tokens a
-- document's own embedding sees.
CREATE TEMP TABLE q AS SELECT bge_embed_query('Where did the lighthouse keeper hide the spare key to the lantern room?', 'all-MiniLM-L6-v2') AS v;
SELECT (SELECT c.id FROM book_chunks c, q ORDER BY c.embedding <=> q.v LIMIT 1) = 7 AS chunks_find_it,
       (SELECT b.id FROM books b, q WHERE b.body IS NOT NULL ORDER BY bge_embed(b.body, 'all-MiniLM-L6-v2') <=> q.v LIMIT 1) <> 7 AS document_embedding_misses_it;
SELECT c.id, c.chunk LIKE '%third loose stone%' AS has_needle
FROM book_chunks c, q ORDER BY c.embedding <=> q.v LIMIT 1;

-- bge_unvectorize stops both the chunking and the embedding; the chunk table stays.
SELECT bge_unvectorize('books');
SELECT count(*) AS triggers_left FROM pg_trigger WHERE tgrelid IN ('books'::regclass, 'book_chunks'::regclass) AND tgname LIKE 'bge%';
SELECT count(*) AS functions_left FROM pg_proc WHERE proname = 'book_chunks_bge_sync';
INSERT INTO books VALUES (30, 'after', 'Written after bge_unvectorize.');
SELECT count(*) AS chunks_of_30 FROM book_chunks WHERE id = 30;
-- Reused, as it is, with its embeddings kept.
SELECT bge_vectorize_chunks('books', 'body', 'book_chunks', 'all-MiniLM-L6-v2', 64, 8);
SELECT pg_temp.wait_chunks();
SELECT pg_temp.chunk_mismatches(64, 8) AS mismatches,
       count(*) FILTER (WHERE embedding = bge_embed(chunk, 'all-MiniLM-L6-v2')) = count(*) AS all_equal FROM book_chunks;
-- A dropped chunk table: bge_unvectorize still removes the trigger and its function.
DROP TABLE book_chunks;
SELECT bge_unvectorize('books');
INSERT INTO books VALUES (31, 'after the drop', 'Writes work again.');
DROP TABLE books, no_key, wrong_chunks;

-- A key whose = is not in pg_catalog (isn's isbn13, in a schema off the search path): the
-- sync function compares keys with the primary key index's own equality operator.
CREATE SCHEMA ext_types;
CREATE EXTENSION isn SCHEMA ext_types;
CREATE TABLE notes (isbn ext_types.isbn13 PRIMARY KEY, body text);
INSERT INTO notes VALUES ('978-0-306-40615-7', 'First note. ' || repeat('Alpha words. ', 30)), ('978-3-16-148410-0', 'Second note.');
SELECT bge_vectorize_chunks('notes', 'body', 'note_chunks', 'all-MiniLM-L6-v2', 32);
UPDATE notes SET body = 'Shorter now.' WHERE isbn::text = '978-0-306-40615-7';
INSERT INTO notes VALUES ('978-1-4028-9462-6', 'Third. ' || repeat('Gamma words. ', 20));
DELETE FROM notes WHERE isbn::text = '978-3-16-148410-0';
SELECT isbn::text, count(*) AS chunks FROM note_chunks GROUP BY 1 ORDER BY 1;
SELECT count(*) AS mismatches FROM (
    (SELECT n.isbn::text, x.* FROM notes n, bge_chunk(n.body, 'all-MiniLM-L6-v2', 32) x
     EXCEPT SELECT isbn::text, seq, chunk, start_char, end_char, tokens FROM note_chunks)
    UNION ALL
    (SELECT isbn::text, seq, chunk, start_char, end_char, tokens FROM note_chunks
     EXCEPT SELECT n.isbn::text, x.* FROM notes n, bge_chunk(n.body, 'all-MiniLM-L6-v2', 32) x)) d;
SELECT bge_unvectorize('notes');
DROP TABLE note_chunks, notes;
DROP SCHEMA ext_types CASCADE;
