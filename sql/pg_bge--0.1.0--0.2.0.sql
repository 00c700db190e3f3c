-- pg_bge 0.1.0 -> 0.2.0 (ALTER EXTENSION pg_bge UPDATE). Every release ships the script from
-- the one before; a fresh install of the new version and an updated old one end up with the same
-- catalog (tests/operations/upgrade.sh compares them).
\echo Use "ALTER EXTENSION pg_bge UPDATE" to load this file. \quit

-- Writing functions refuse up front on a standby (25006).
CREATE FUNCTION bge_internal."bge_refuse_on_standby"(
	"what" TEXT /* & str */
) RETURNS void
STRICT VOLATILE PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'bge_refuse_on_standby_wrapper';
COMMENT ON FUNCTION bge_internal.bge_refuse_on_standby(text) IS
    'Raises an error (25006) on a standby, before a pg_bge function that writes does any work; internal.';

-- Registrations name their pending index instead of referencing it, so that a dump restores
-- them (the index is created after the table's data).
CREATE FUNCTION bge_internal.bge_upgrade_relname(pg_catalog.oid) RETURNS pg_catalog.name
LANGUAGE sql STABLE AS $$ SELECT c.relname FROM pg_catalog.pg_class c WHERE c.oid OPERATOR(pg_catalog.=) $1 $$;
ALTER TABLE @extschema@.bge_vectorized ALTER COLUMN pending_index TYPE pg_catalog.name
    USING bge_internal.bge_upgrade_relname(pending_index::pg_catalog.oid);
DROP FUNCTION bge_internal.bge_upgrade_relname(pg_catalog.oid);

-- Partitioned tables are accepted.
CREATE OR REPLACE FUNCTION bge_internal.bge_check_columns(tbl regclass, source name, target name, model text) RETURNS text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    rel record;
    src record;
    tgt record;
    dims integer;
    model_kind text;
    model_name text := coalesce(model, current_setting('bge.model'));
BEGIN
    SELECT c.relkind, c.relname INTO rel FROM pg_class c WHERE c.oid = tbl;
    -- A partitioned table counts for all its partitions, those attached later included.
    IF rel.relkind IS DISTINCT FROM 'r' AND rel.relkind IS DISTINCT FROM 'p' THEN
        RAISE EXCEPTION '% is not a table', tbl USING ERRCODE = 'wrong_object_type';
    END IF;
    SELECT a.atttypid, t.typcategory INTO src FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
        WHERE a.attrelid = tbl AND a.attname = source AND a.attnum > 0 AND NOT a.attisdropped;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'column "%" of % does not exist', source, tbl USING ERRCODE = 'undefined_column';
    ELSIF src.typcategory <> 'S' THEN
        RAISE EXCEPTION 'source column "%" is of type %, not text', source, format_type(src.atttypid, NULL)
            USING ERRCODE = 'datatype_mismatch', HINT = 'The source must be text, varchar or char.';
    END IF;
    SELECT a.atttypid, a.atttypmod, a.attgenerated, t.typname INTO tgt FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
        WHERE a.attrelid = tbl AND a.attname = target AND a.attnum > 0 AND NOT a.attisdropped;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'column "%" of % does not exist', target, tbl USING ERRCODE = 'undefined_column',
            HINT = 'Add it first, e.g. ALTER TABLE ... ADD COLUMN embedding real[] (or vector(n) with pgvector).';
    ELSIF target = source THEN
        RAISE EXCEPTION 'source and target are the same column' USING ERRCODE = 'invalid_parameter_value';
    ELSIF tgt.attgenerated <> '' THEN
        RAISE EXCEPTION 'target column "%" is a generated column', target USING ERRCODE = 'wrong_object_type',
            HINT = 'A generated column is always filled already; fill a plain column instead.';
    ELSIF tgt.atttypid NOT IN ('real[]'::regtype, 'double precision[]'::regtype)
          AND NOT EXISTS (SELECT FROM pg_cast WHERE castsource = 'real[]'::regtype AND casttarget = tgt.atttypid AND castcontext IN ('a', 'i')) THEN
        RAISE EXCEPTION 'target column "%" is of type %, which takes no real[]', target, format_type(tgt.atttypid, tgt.atttypmod)
            USING ERRCODE = 'datatype_mismatch', HINT = 'Use real[], or pgvector''s vector or halfvec.';
    END IF;
    SELECT m.dimensions, m.kind INTO dims, model_kind FROM @extschema@.bge_models() m WHERE m.name = model_name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'model "%" is not installed', model_name USING ERRCODE = 'undefined_object',
            HINT = 'SELECT name FROM bge_models() lists the models under bge.model_dir.';
    ELSIF model_kind = 'reranker' THEN
        RAISE EXCEPTION 'model "%" is a reranker, not an embedder', model_name USING ERRCODE = 'invalid_parameter_value',
            HINT = 'Fill embeddings with an embedder; a reranker scores (query, passage) pairs with bge_rerank.';
    END IF;
    IF tgt.typname IN ('vector', 'halfvec') AND tgt.atttypmod > 0 AND tgt.atttypmod <> dims THEN
        RAISE EXCEPTION 'target column "%" is %, but model "%" gives % dimensions', target, format_type(tgt.atttypid, tgt.atttypmod), model_name, dims
            USING ERRCODE = 'datatype_mismatch';
    END IF;
    RETURN model_name;
END $$;

-- Refuses on a standby; the trigger fires in logical replication's apply worker too.
CREATE OR REPLACE FUNCTION bge_vectorize(tbl regclass, source name, target name, model text DEFAULT NULL) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    model_name text;
    trigger_name text := left('bge_vectorize_' || target, 63);
    index_name text;
    pending regclass;
BEGIN
    PERFORM bge_internal.bge_refuse_on_standby('bge_vectorize');
    model_name := bge_internal.bge_check_columns(tbl, source, target, model);
    IF NOT pg_has_role((SELECT relowner FROM pg_class WHERE oid = tbl), 'USAGE') THEN
        RAISE EXCEPTION 'must be owner of table %', tbl USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF EXISTS (SELECT FROM @extschema@.bge_vectorized v WHERE v.tbl = bge_vectorize.tbl AND v.target = bge_vectorize.target) THEN
        RAISE EXCEPTION '%.% is vectorized already', tbl, target USING ERRCODE = 'duplicate_object',
            HINT = 'bge_unvectorize it first to change its source or model.';
    END IF;
    -- Writes of the source leave the target NULL until the worker fills it. On a partitioned
    -- table every update reaches the trigger: one that moves a row to another partition
    -- without changing its source keeps the row's vector (src/vectorize/trigger.rs).
    EXECUTE format('CREATE TRIGGER %I BEFORE INSERT OR UPDATE %s ON %s FOR EACH ROW EXECUTE FUNCTION bge_internal.bge_vectorize_trigger(%L, %L)',
                   trigger_name, CASE WHEN (SELECT relkind FROM pg_class WHERE oid = tbl) = 'p' THEN '' ELSE format('OF %I', source) END,
                   tbl, source, target);
    -- Also in logical replication's apply worker (session_replication_role = replica): a
    -- subscriber that vectorizes its copy re-embeds replicated writes.
    EXECUTE format('ALTER TABLE %s ENABLE ALWAYS TRIGGER %I', tbl, trigger_name);
    -- Finds the pending rows without scanning the table: it holds only them, under one key.
    index_name := left(format('%s_%s_bge_pending', (SELECT relname FROM pg_class WHERE oid = tbl), target), 63);
    EXECUTE format('CREATE INDEX %I ON %s ((1)) WHERE %I IS NULL AND %I IS NOT NULL', index_name, tbl, target, source);
    -- (::name cuts the name at 63 bytes, as CREATE INDEX did.)
    SELECT i.indexrelid INTO pending FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
        WHERE i.indrelid = tbl AND c.relname = index_name::name;
    IF pending IS NULL THEN
        RAISE EXCEPTION 'bge_vectorize could not find the index it created on %', tbl USING ERRCODE = 'internal_error';
    END IF;
    PERFORM bge_internal.bge_vectorize_register(tbl::oid, source::text, target::text, model_name,
        model IS NOT NULL OR current_setting('bge.truncate')::boolean,
        CASE WHEN model IS NULL THEN current_setting('bge.precision') ELSE 'fp32' END,
        pending::oid);
    PERFORM bge_internal.bge_vectorizer_start();
END $$;

-- Refuses on a standby; stops chunk tables too.
CREATE OR REPLACE FUNCTION bge_unvectorize(tbl regclass, target name DEFAULT NULL) RETURNS integer
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v record;
    n integer := 0;
BEGIN
    PERFORM bge_internal.bge_refuse_on_standby('bge_unvectorize');
    IF NOT pg_has_role((SELECT relowner FROM pg_class WHERE oid = tbl), 'USAGE') THEN
        RAISE EXCEPTION 'must be owner of table %', tbl USING ERRCODE = 'insufficient_privilege';
    END IF;
    -- The table before its registrations, the order the vectorizer worker takes them in (a
    -- batch writes the table, then its registration row), so the two never deadlock.
    EXECUTE format('LOCK TABLE %s IN ACCESS EXCLUSIVE MODE', tbl);
    -- Chunk tables of tbl (bge_vectorize_chunks; target names the chunk table): the trigger
    -- and its function go, and the chunk table's embedding registration; the chunk table stays.
    -- Only what bge_vectorize_chunks made: its function in tbl's schema, of tbl's owner, and the
    -- chunk table there referencing tbl (or none, when it was dropped).
    FOR v IN SELECT t.tgname, t.tgfoid::regprocedure AS fn, c.oid::regclass AS chunks
             FROM pg_trigger t
             JOIN pg_class r ON r.oid = t.tgrelid
             JOIN pg_proc p ON p.oid = t.tgfoid
             LEFT JOIN pg_class c ON c.relnamespace = r.relnamespace AND ('bge_chunks_' || c.relname)::name = t.tgname
                  AND c.relowner = r.relowner
                  AND EXISTS (SELECT FROM pg_constraint k WHERE k.conrelid = c.oid AND k.confrelid = tbl AND k.contype = 'f')
             WHERE t.tgrelid = tbl AND t.tgname LIKE 'bge\_chunks\_%' AND p.proowner = r.relowner AND p.prosecdef
               AND p.pronamespace = r.relnamespace AND p.proname LIKE '%\_bge\_sync'
               AND (target IS NULL OR t.tgname = ('bge_chunks_' || target)::name) LOOP
        EXECUTE format('DROP TRIGGER %I ON %s', v.tgname, tbl);
        EXECUTE format('DROP FUNCTION %s', v.fn);
        IF v.chunks IS NOT NULL AND EXISTS (SELECT FROM @extschema@.bge_vectorized r WHERE r.tbl = v.chunks AND r.target = 'embedding') THEN
            PERFORM @extschema@.bge_unvectorize(v.chunks, 'embedding'::pg_catalog.name);
        END IF;
        n := n + 1;
    END LOOP;
    FOR v IN SELECT * FROM bge_internal.bge_vectorize_unregister(tbl::oid, target::text) LOOP
        EXECUTE format('DROP TRIGGER IF EXISTS %I ON %s', left('bge_vectorize_' || v.target, 63), tbl);
        -- Only an index of this very table (an OID can be reused after the index was dropped).
        IF EXISTS (SELECT FROM pg_index i WHERE i.indexrelid = v.pending_index AND i.indrelid = tbl) THEN
            EXECUTE format('DROP INDEX IF EXISTS %s', v.pending_index::regclass);
        END IF;
        n := n + 1;
    END LOOP;
    IF n = 0 THEN
        RAISE EXCEPTION '% is not vectorized%', tbl, coalesce(' on ' || quote_ident(target), '') USING ERRCODE = 'undefined_object';
    END IF;
    RETURN n;
END $$;

-- Counts a partitioned table's failed rows, recorded by partition.
CREATE OR REPLACE FUNCTION bge_vectorize_status()
RETURNS TABLE (tbl regclass, source name, target name, model text, pending bigint, failed bigint, lag interval,
               rows_per_s double precision, rows_done bigint, last_batch_at timestamptz, last_error text,
               last_error_at timestamptz, worker_pid integer)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v record;
    pid integer;
BEGIN
    -- After a restart without shared_preload_libraries nobody else starts the worker.
    pid := bge_internal.bge_vectorizer_start();
    FOR v IN SELECT * FROM @extschema@.bge_vectorized r WHERE EXISTS (SELECT FROM pg_class c WHERE c.oid = r.tbl) ORDER BY r.tbl::text, r.target LOOP
        tbl := v.tbl; source := v.source; target := v.target; model := v.model;
        rows_per_s := v.rows_per_s; rows_done := v.rows_done; last_batch_at := v.last_batch_at;
        last_error := v.last_error; last_error_at := v.last_error_at; worker_pid := pid;
        -- Counted as the table's owner: the caller never runs the owner's code.
        pending := bge_internal.bge_vectorize_pending(v.tbl::oid, v.source::text, v.target::text);
        -- Failed rows are recorded by the plain table holding them (a partition of a partitioned one).
        SELECT count(*) INTO failed FROM @extschema@.bge_vectorize_errors e
            WHERE (e.tbl = v.tbl OR e.tbl IN (SELECT t.relid FROM pg_partition_tree(v.tbl) t)) AND e.target = v.target;
        lag := CASE WHEN pending > 0 THEN now() - coalesce(v.caught_up_at, v.registered_at) ELSE '0'::interval END;
        RETURN NEXT;
    END LOOP;
END $$;

-- Triggers of existing registrations fire in the apply worker too, as bge_vectorize's now do.
DO $$
DECLARE
    v record;
BEGIN
    FOR v IN SELECT r.tbl, r.target FROM @extschema@.bge_vectorized r
             WHERE EXISTS (SELECT FROM pg_catalog.pg_trigger t WHERE t.tgrelid OPERATOR(pg_catalog.=) r.tbl
                           AND t.tgname OPERATOR(pg_catalog.=) pg_catalog.left('bge_vectorize_' OPERATOR(pg_catalog.||) r.target, 63)) LOOP
        EXECUTE pg_catalog.format('ALTER TABLE %s ENABLE ALWAYS TRIGGER %I', v.tbl, pg_catalog.left('bge_vectorize_' OPERATOR(pg_catalog.||) v.target, 63));
    END LOOP;
END $$;

-- bge_chunk: a text cut into chunks that each embed without truncation.
CREATE FUNCTION "bge_chunk"(
	"input" TEXT, /* Option < & str > */
	"model" TEXT, /* Option < & str > */
	"max_tokens" INT DEFAULT NULL, /* Option < i32 > */
	"overlap" INT DEFAULT 0 /* Option < i32 > */
) RETURNS TABLE (
	"seq" INT,  /* i32 */
	"chunk" TEXT,  /* String */
	"start_char" INT,  /* i32 */
	"end_char" INT,  /* i32 */
	"tokens" INT  /* i32 */
)
IMMUTABLE PARALLEL SAFE COST 1000
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'bge_chunk_wrapper';

-- Chunk tables (docs/rag.md#chunk-tables): tbl's rows cut by bge_chunk into a table of their
-- chunks, kept equal to bge_chunk(source, ...) by an AFTER trigger on tbl, whose embeddings the
-- vectorizer fills as for any bge_vectorize registration (the chunk table's own). The trigger's
-- function is created beside the tables, owned by tbl's owner (as are the chunk table and the
-- tables it reuses), SECURITY DEFINER and not executable by PUBLIC, so that whoever writes tbl
-- needs no privileges on the chunk table and nobody can fire it from a table of their own.
CREATE FUNCTION bge_vectorize_chunks(tbl regclass, source name, chunk_table name, model text,
                                     max_tokens integer DEFAULT NULL, overlap integer DEFAULT 0,
                                     embedding_type text DEFAULT 'real[]') RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $chunks$
DECLARE
    ext text := (SELECT quote_ident(n.nspname) FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'pg_bge');
    rel record;
    keys text;         -- k1, k2
    key_defs text;     -- k1 type NOT NULL, ...
    new_keys text;     -- NEW.k1, NEW.k2
    t_keys text;       -- t.k1, t.k2
    c_is_new text;     -- c.k1 = NEW.k1 AND ..., each = the key index's own equality operator
    t_is_c text;       -- t.k1 = c.k1 AND ...
    key_names name[];
    key_types text[];
    key_equals text[]; -- OPERATOR(schema.=): a key type's = may live outside pg_catalog (citext)
    chunks regclass;
    qualified text;
    sync_function text;
    trigger_name name := ('bge_chunks_' || chunk_table)::name;
    owner_name text;
    body text;
    column_type text;
    dims integer;
    args text;
BEGIN
    PERFORM bge_internal.bge_refuse_on_standby('bge_vectorize_chunks');
    SELECT c.relkind, c.relowner, quote_ident(n.nspname) AS nsp INTO rel
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = tbl;
    owner_name := (SELECT quote_ident(rolname) FROM pg_roles WHERE oid = rel.relowner);
    -- Under REPEATABLE READ the snapshot predates CREATE TRIGGER's lock: rows committed while it
    -- waited would get no chunks.
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'bge_vectorize_chunks must run at READ COMMITTED' USING ERRCODE = 'invalid_transaction_state';
    END IF;
    IF rel.relkind IS DISTINCT FROM 'r' AND rel.relkind IS DISTINCT FROM 'p' THEN
        RAISE EXCEPTION '% is not a table', tbl USING ERRCODE = 'wrong_object_type';
    ELSIF NOT pg_has_role(rel.relowner, 'USAGE') THEN
        RAISE EXCEPTION 'must be owner of table %', tbl USING ERRCODE = 'insufficient_privilege';
    ELSIF model IS NULL OR chunk_table IS NULL OR source IS NULL THEN
        RAISE EXCEPTION 'bge_vectorize_chunks needs a source column, a chunk table and a model' USING ERRCODE = 'null_value_not_allowed';
    ELSIF NOT EXISTS (SELECT FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid WHERE a.attrelid = tbl AND a.attname = source
                      AND a.attnum > 0 AND NOT a.attisdropped AND t.typcategory = 'S') THEN
        RAISE EXCEPTION 'column "%" of % does not exist or is not text', source, tbl USING ERRCODE = 'undefined_column';
    END IF;
    -- The arguments and the model, checked by bge_chunk itself (22023, 42704).
    PERFORM FROM @extschema@.bge_chunk('x'::pg_catalog.text, model, max_tokens, overlap);
    IF (SELECT m.kind FROM @extschema@.bge_models() m WHERE m.name = model) = 'reranker' THEN
        RAISE EXCEPTION 'model "%" is a reranker, not an embedder', model USING ERRCODE = 'invalid_parameter_value',
            HINT = 'Embed chunks with an embedder; a reranker scores (query, passage) pairs with bge_rerank.';
    END IF;
    overlap := coalesce(overlap, 0);
    SELECT array_agg(a.attname ORDER BY k.ord), array_agg(format_type(a.atttypid, a.atttypmod) ORDER BY k.ord),
           array_agg(format('OPERATOR(%I.%s)', opn.nspname, op.oprname) ORDER BY k.ord)
        INTO key_names, key_types, key_equals
        FROM pg_index i CROSS JOIN LATERAL unnest(i.indkey::int2[], i.indclass::oid[]) WITH ORDINALITY k(attnum, opclass, ord)
        JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
        JOIN pg_opclass oc ON oc.oid = k.opclass
        JOIN pg_amop ao ON ao.amopfamily = oc.opcfamily AND ao.amopstrategy = 3 -- btree equality
             AND ao.amoplefttype = oc.opcintype AND ao.amoprighttype = oc.opcintype
        JOIN pg_operator op ON op.oid = ao.amopopr JOIN pg_namespace opn ON opn.oid = op.oprnamespace
        WHERE i.indrelid = tbl AND i.indisprimary;
    IF key_names IS NULL THEN
        RAISE EXCEPTION '% has no primary key', tbl USING ERRCODE = 'invalid_table_definition',
            HINT = 'Chunks refer to their row by its primary key.';
    ELSIF key_names && ARRAY['seq', 'chunk', 'start_char', 'end_char', 'tokens', 'embedding']::name[] THEN
        RAISE EXCEPTION 'a primary key column of % is named like a chunk table column', tbl USING ERRCODE = 'duplicate_column';
    END IF;
    SELECT string_agg(quote_ident(k), ', '), string_agg(format('%I %s NOT NULL', k, key_types[i]), ', '),
           string_agg('NEW.' || quote_ident(k), ', '), string_agg('t.' || quote_ident(k), ', '),
           string_agg(format('c.%I %s NEW.%I', k, key_equals[i], k), ' AND '), string_agg(format('t.%I %s c.%I', k, key_equals[i], k), ' AND ')
        INTO keys, key_defs, new_keys, t_keys, c_is_new, t_is_c
        FROM unnest(key_names) WITH ORDINALITY u(k, i);
    -- The embedding column's type: a whitelist, because it is written into DDL.
    dims := (SELECT m.dimensions FROM @extschema@.bge_models() m WHERE m.name = model);
    IF embedding_type ~* '^\s*(real|float4)\s*\[\]\s*$' THEN
        column_type := 'real[]';
    ELSIF embedding_type ~* '^\s*(vector|halfvec)\s*(\(\s*\d+\s*\))?\s*$' THEN
        SELECT format('%I.%I(%s)', n.nspname, t.typname, dims) INTO column_type FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
            WHERE t.typname = lower(substring(embedding_type FROM '(?i)(vector|halfvec)')) AND t.typtype = 'b' LIMIT 1;
        IF column_type IS NULL THEN
            RAISE EXCEPTION 'type % does not exist', embedding_type USING ERRCODE = 'undefined_object', HINT = 'CREATE EXTENSION vector;';
        ELSIF coalesce(substring(embedding_type FROM '\d+')::integer, dims) <> dims THEN
            RAISE EXCEPTION 'embedding_type % does not fit model "%", which gives % dimensions', embedding_type, model, dims USING ERRCODE = 'datatype_mismatch';
        END IF;
    ELSE
        RAISE EXCEPTION 'embedding_type must be real[], vector(n) or halfvec(n), not %', embedding_type USING ERRCODE = 'invalid_parameter_value';
    END IF;
    qualified := rel.nsp || '.' || quote_ident(chunk_table);
    chunks := to_regclass(qualified);
    IF chunks IS NULL THEN
        EXECUTE format('CREATE TABLE %s (%s, seq integer NOT NULL, chunk text NOT NULL, start_char integer NOT NULL, '
                       'end_char integer NOT NULL, tokens integer NOT NULL, embedding %s, PRIMARY KEY (%s, seq), '
                       'FOREIGN KEY (%s) REFERENCES %s ON DELETE CASCADE ON UPDATE CASCADE)',
                       qualified, key_defs, column_type, keys, keys, tbl);
        chunks := qualified::regclass;
        EXECUTE format('ALTER TABLE %s OWNER TO %s', chunks, owner_name);
    ELSE
        -- Reused: a plain table of tbl's owner with the columns it needs (extra ones allowed)
        -- and (keys, seq) unique. Another role's table is never written as tbl's owner.
        IF (SELECT relkind <> 'r' OR relowner <> rel.relowner FROM pg_class WHERE oid = chunks) THEN
            RAISE EXCEPTION '% is not a table owned by the owner of %', chunks, tbl USING ERRCODE = 'insufficient_privilege',
                HINT = 'Name a new chunk table, or one owned by the same role.';
        END IF;
        IF EXISTS (SELECT FROM unnest(key_names || ARRAY['seq', 'chunk', 'start_char', 'end_char', 'tokens']::name[],
                                      key_types || ARRAY['integer', 'text', 'integer', 'integer', 'integer']) u(col, typ)
                   WHERE NOT EXISTS (SELECT FROM pg_attribute a WHERE a.attrelid = chunks AND a.attname = u.col AND a.attnum > 0
                                     AND NOT a.attisdropped AND format_type(a.atttypid, a.atttypmod) = u.typ))
           OR NOT EXISTS (SELECT FROM pg_attribute a WHERE a.attrelid = chunks AND a.attname = 'embedding' AND a.attnum > 0 AND NOT a.attisdropped)
           OR NOT EXISTS (SELECT FROM pg_index i WHERE i.indrelid = chunks AND i.indisunique AND i.indpred IS NULL AND i.indexprs IS NULL
                          AND (SELECT array_agg(a.attname ORDER BY a.attname) FROM pg_attribute a WHERE a.attrelid = chunks AND a.attnum = ANY (i.indkey))
                              = (SELECT array_agg(x ORDER BY x) FROM unnest(key_names || 'seq'::name) x)) THEN
            RAISE EXCEPTION 'table % does not have the columns of a chunk table of %', chunks, tbl USING ERRCODE = 'invalid_table_definition',
                HINT = format('It needs %s, seq integer, chunk text, start_char integer, end_char integer, tokens integer, embedding, and a unique key on (%s, seq); or name a new table.', key_defs, keys);
        END IF;
    END IF;
    IF EXISTS (SELECT FROM pg_trigger t WHERE t.tgrelid = tbl AND t.tgname = trigger_name) THEN
        RAISE EXCEPTION '% is chunked into % already', tbl, chunks USING ERRCODE = 'duplicate_object',
            HINT = 'bge_unvectorize it first to change its source, model or sizes.';
    END IF;
    -- bge_chunk's arguments, of its exact types (no overload planted in a schema can match better).
    args := format('%L::pg_catalog.text, %s::pg_catalog.int4, %s::pg_catalog.int4', model, coalesce(max_tokens::text, 'NULL'), overlap);
    -- One function per chunk table: its body names the tables, so no argument is interpreted.
    sync_function := rel.nsp || '.' || quote_ident((chunk_table || '_bge_sync')::name);
    body := format($f$
BEGIN
    IF TG_RELID OPERATOR(pg_catalog.<>) %L::pg_catalog.regclass
       AND NOT TG_RELID OPERATOR(pg_catalog.=) ANY (SELECT t.relid FROM pg_catalog.pg_partition_tree(%L::pg_catalog.regclass) t) THEN
        RAISE EXCEPTION '%% keeps %% in sync with %% only', %L, %L, %L USING ERRCODE = 'wrong_object_type';
    END IF;
    -- Kept equal to bge_chunk(NEW.source): changed chunks are rewritten (the vectorizer re-embeds
    -- them), unchanged ones keep their embedding, and those past the new last one go.
    WITH x AS (SELECT * FROM %s.bge_chunk(NEW.%I::pg_catalog.text, %s)),
    up AS (INSERT INTO %s AS c (%s, seq, chunk, start_char, end_char, tokens)
           SELECT %s, x.seq, x.chunk, x.start_char, x.end_char, x.tokens FROM x
           ON CONFLICT (%s, seq) DO UPDATE SET chunk = EXCLUDED.chunk, start_char = EXCLUDED.start_char,
               end_char = EXCLUDED.end_char, tokens = EXCLUDED.tokens
           WHERE (c.chunk, c.start_char, c.end_char, c.tokens) IS DISTINCT FROM (EXCLUDED.chunk, EXCLUDED.start_char, EXCLUDED.end_char, EXCLUDED.tokens))
    DELETE FROM %s c WHERE %s AND c.seq OPERATOR(pg_catalog.>) (SELECT pg_catalog.count(*) FROM x);
    RETURN NULL;
END$f$,
        tbl, tbl, sync_function, chunks, tbl, ext, source, args, chunks, keys, new_keys, keys, chunks, c_is_new);
    EXECUTE format('CREATE FUNCTION %s() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS %L',
                   sync_function, body);
    EXECUTE format('REVOKE ALL ON FUNCTION %s() FROM PUBLIC', sync_function);
    EXECUTE format('ALTER FUNCTION %s() OWNER TO %s', sync_function, owner_name);
    -- Fires for the origin's writes only (a subscriber that also receives the chunk table would
    -- otherwise make each chunk twice); see docs/operations.md for subscribers.
    EXECUTE format('CREATE TRIGGER %I AFTER INSERT OR UPDATE OF %I ON %s FOR EACH ROW EXECUTE FUNCTION %s()',
                   trigger_name, source, tbl, sync_function);
    -- The rows already there (writers wait: CREATE TRIGGER locked tbl against them).
    EXECUTE format('CREATE TEMP TABLE bge_chunks_now ON COMMIT DROP AS SELECT %s, x.seq, x.chunk, x.start_char, x.end_char, x.tokens '
                   'FROM %s t CROSS JOIN LATERAL %s.bge_chunk(t.%I::pg_catalog.text, %s) x',
                   t_keys, tbl, ext, source, args);
    EXECUTE format('DELETE FROM %s c WHERE NOT EXISTS (SELECT FROM pg_temp.bge_chunks_now t WHERE %s AND t.seq = c.seq)',
                   chunks, t_is_c);
    EXECUTE format('INSERT INTO %s AS c (%s, seq, chunk, start_char, end_char, tokens) SELECT %s, t.seq, t.chunk, t.start_char, t.end_char, t.tokens '
                   'FROM pg_temp.bge_chunks_now t ON CONFLICT (%s, seq) DO UPDATE SET chunk = EXCLUDED.chunk, start_char = EXCLUDED.start_char, '
                   'end_char = EXCLUDED.end_char, tokens = EXCLUDED.tokens '
                   'WHERE (c.chunk, c.start_char, c.end_char, c.tokens) IS DISTINCT FROM (EXCLUDED.chunk, EXCLUDED.start_char, EXCLUDED.end_char, EXCLUDED.tokens)',
                   chunks, keys, t_keys, keys);
    DROP TABLE pg_temp.bge_chunks_now;
    -- The embeddings: the chunk table's own registration, filled by the vectorizer.
    IF NOT EXISTS (SELECT FROM @extschema@.bge_vectorized v WHERE v.tbl = chunks AND v.target = 'embedding') THEN
        PERFORM @extschema@.bge_vectorize(chunks, 'chunk'::pg_catalog.name, 'embedding'::pg_catalog.name, model);
    END IF;
END $chunks$;
COMMENT ON FUNCTION bge_vectorize_chunks(regclass, name, name, text, integer, integer, text) IS
    'Keeps chunk_table (created in tbl''s schema if missing: tbl''s primary key, seq, chunk, start_char, end_char, tokens, embedding) equal to bge_chunk(source, model, max_tokens, overlap) for every row of tbl, through a trigger on tbl; the vectorizer fills each chunk''s embedding with bge_embed(chunk, model). bge_unvectorize(tbl) stops it; the chunk table stays.';

-- Rerankers (0.2.0): bge_models() gains a kind column (the library keeps release 0.1.0's C
-- symbol, bge_models_wrapper, for a database not updated yet), and bge_rerank.
DROP FUNCTION bge_models();
CREATE FUNCTION bge_models() RETURNS TABLE (
	"name" TEXT,
	"kind" TEXT,
	"architecture" TEXT,
	"dimensions" INT,
	"max_tokens" INT,
	"pooling" TEXT,
	"normalize" bool,
	"device" TEXT,
	"isa" TEXT,
	"precision" TEXT,
	"loaded" bool,
	"load_ms" double precision,
	"error" TEXT
)
STRICT VOLATILE PARALLEL SAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'bge_models_with_kind_wrapper';
ALTER FUNCTION bge_models() ROWS 10;
CREATE FUNCTION "bge_rerank"("query" TEXT, "passage" TEXT, "model" TEXT, "normalize" bool DEFAULT false) RETURNS double precision
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'bge_rerank_wrapper';
CREATE FUNCTION "bge_rerank"("query" TEXT, "passages" TEXT[], "model" TEXT, "normalize" bool DEFAULT false) RETURNS SETOF double precision
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'bge_rerank_array_wrapper';
ALTER FUNCTION bge_rerank(text, text, text, boolean) COST 20000;
ALTER FUNCTION bge_rerank(text, text[], text, boolean) COST 20000;
ALTER FUNCTION bge_rerank(text, text, text, boolean) SUPPORT bge_internal.bge_planner_support;
ALTER FUNCTION bge_rerank(text, text[], text, boolean) SUPPORT bge_internal.bge_planner_support;
COMMENT ON FUNCTION bge_models() IS
    'Models installed under bge.model_dir: kind (embedder, or reranker: a cross-encoder for bge_rerank, without dimensions or pooling), architecture, dimensions, max tokens, pooling, normalisation, device, CPU kernel family (isa: avx512, avx2 or portable; NULL on a GPU) and linear-layer precision (fp32, bf16, int8; fp16 on a GPU), whether it is loaded (by the model server when it computes for this session, else by this backend) and how long that took, or why it cannot be read.';
COMMENT ON FUNCTION bge_rerank(text, text, text, boolean) IS
    'Relevance of passage to query by a cross-encoder (reranker) model: its raw logit, as FlagReranker.compute_score returns it (normalize => true applies its sigmoid). The query keeps its first max_length * 3 / 4 tokens and the passage what fits beside it in max_length (512, or fewer positions of the model). IMMUTABLE: always fp32.';
COMMENT ON FUNCTION bge_rerank(text, text[], text, boolean) IS
    'bge_rerank of query with every element of passages in one batched pass, in input order: NULL elements give NULL; each score bitwise the single form''s.';
