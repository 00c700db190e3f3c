-- pg_bge's catalog in this database, one line per defining fact, in a stable order: what a fresh
-- install and an updated older one must agree on (tests/operations/upgrade.sh). OIDs differ
-- between databases, so objects are named, never numbered.
WITH ext AS (
    SELECT e.oid, e.extversion, e.extconfig, e.extcondition FROM pg_extension e WHERE e.extname = 'pg_bge'
), members AS (
    SELECT d.classid, d.objid, d.objsubid FROM pg_depend d, ext
    WHERE d.refclassid = 'pg_extension'::regclass AND d.refobjid = ext.oid AND d.deptype = 'e'
), rels AS (
    SELECT c.* FROM pg_class c JOIN members m ON m.classid = 'pg_class'::regclass AND m.objid = c.oid
)
SELECT line FROM (
    SELECT format('version %s; dumped tables %s %s', extversion,
                  (SELECT array_agg(t::regclass::text ORDER BY t::regclass::text) FROM unnest(extconfig) t), extcondition) AS line
    FROM ext
    UNION ALL
    SELECT 'member ' || pg_describe_object(classid, objid, objsubid) FROM members
    UNION ALL
    SELECT format('function %s.%s(%s) -> %s; args %s; %s %s strict=%s parallel=%s cost=%s rows=%s secdef=%s leakproof=%s config=%s support=%s acl=%s body=%s bin=%s comment=%s',
                  n.nspname, p.proname, pg_get_function_identity_arguments(p.oid), pg_get_function_result(p.oid),
                  pg_get_function_arguments(p.oid), p.prokind, l.lanname || '/' || p.provolatile::text, p.proisstrict, p.proparallel,
                  p.procost, p.prorows, p.prosecdef, p.proleakproof, p.proconfig, p.prosupport, p.proacl,
                  md5(p.prosrc), p.probin, md5(coalesce(obj_description(p.oid, 'pg_proc'), '')))
    FROM members m JOIN pg_proc p ON m.classid = 'pg_proc'::regclass AND p.oid = m.objid
    JOIN pg_namespace n ON n.oid = p.pronamespace JOIN pg_language l ON l.oid = p.prolang
    UNION ALL
    SELECT format('operator %s(%s, %s) -> %s by %s commutator %s negator %s restrict %s join %s comment %s',
                  o.oprname, o.oprleft::regtype, o.oprright::regtype, o.oprresult::regtype, o.oprcode,
                  o.oprcom::regoperator, o.oprnegate::regoperator, o.oprrest, o.oprjoin, obj_description(o.oid, 'pg_operator'))
    FROM members m JOIN pg_operator o ON m.classid = 'pg_operator'::regclass AND o.oid = m.objid
    UNION ALL
    SELECT format('relation %s.%s kind %s rls %s/%s acl %s comment %s', n.nspname, r.relname, r.relkind, r.relrowsecurity,
                  r.relforcerowsecurity, r.relacl, obj_description(r.oid, 'pg_class'))
    FROM rels r JOIN pg_namespace n ON n.oid = r.relnamespace
    UNION ALL
    SELECT format('column %s.%s #%s %s notnull %s default %s', r.relname, a.attname, a.attnum,
                  format_type(a.atttypid, a.atttypmod), a.attnotnull, pg_get_expr(d.adbin, d.adrelid))
    FROM rels r JOIN pg_attribute a ON a.attrelid = r.oid AND a.attnum > 0 AND NOT a.attisdropped
    LEFT JOIN pg_attrdef d ON d.adrelid = r.oid AND d.adnum = a.attnum
    UNION ALL
    SELECT format('constraint %s on %s: %s', c.conname, r.relname, pg_get_constraintdef(c.oid))
    FROM rels r JOIN pg_constraint c ON c.conrelid = r.oid
    UNION ALL
    SELECT format('index %s', pg_get_indexdef(i.indexrelid)) FROM rels r JOIN pg_index i ON i.indrelid = r.oid
    UNION ALL
    SELECT format('policy %s on %s: %s %s roles %s using %s check %s', p.policyname, p.tablename, p.permissive, p.cmd,
                  p.roles, p.qual, p.with_check)
    FROM pg_policies p JOIN rels r ON r.relname = p.tablename
    UNION ALL
    SELECT format('schema %s owner-is-installer %s acl %s', n.nspname, n.nspowner = (SELECT extowner FROM pg_extension WHERE extname = 'pg_bge'), n.nspacl)
    FROM pg_namespace n WHERE n.nspname = 'bge_internal'
) facts
ORDER BY line;
