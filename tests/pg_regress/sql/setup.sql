-- pg_bge SQL tests run against a scratch cluster whose bge.model_dir holds the test models
-- (scripts/models/make_test_models.py); see scripts/test.sh.
CREATE EXTENSION pg_bge;

-- Every function: volatility (i = immutable), strictness, parallel safety (s = safe), comment.
SELECT p.oid::regprocedure AS function, p.provolatile AS volatility, p.proisstrict AS strict,
       p.proparallel AS parallel, p.proretset AS returns_set,
       obj_description(p.oid, 'pg_proc') IS NOT NULL AS has_comment
FROM pg_proc p
JOIN pg_depend d ON d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e'
JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'pg_bge'
ORDER BY p.oid::regprocedure::text COLLATE "C";

SELECT oprname, oprleft::regtype, oprright::regtype, oprresult::regtype, oprcode,
       obj_description(oid, 'pg_operator') IS NOT NULL AS has_comment
FROM pg_operator WHERE oprcode::text LIKE 'bge\_%' ORDER BY oprname;

-- Settings and their defaults.
-- (The model server's settings, bge.server_*, exist only when pg_bge is preloaded: see server.sql.)
SELECT name, setting, context, vartype, enumvals FROM pg_settings WHERE name LIKE 'bge.%' AND name NOT LIKE 'bge.server\_%' ORDER BY name;

-- Installed models, before any is loaded.
SELECT name, architecture, dimensions, max_tokens, pooling, normalize, device, loaded, error IS NOT NULL AS broken
FROM bge_models() ORDER BY name;
