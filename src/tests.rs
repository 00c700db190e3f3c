//! `cargo pgrx test`: the SQL surface inside a real PostgreSQL, through SPI, against the
//! committed goldens (sentence-transformers for all-MiniLM-L6-v2, FlagEmbedding for the tiny
//! BGE-M3-shaped model). The fuller SQL suite is tests/pg_regress (scripts/test.sh).
use pgrx::prelude::*;

/// pgrx runs each #[pg_test] as the SQL function tests.<name>().
#[pg_schema]
mod tests {
    use pgrx::prelude::*;
    use serde_json::Value;

    /// Compiled in: the server's user may not be able to read the checkout.
    fn goldens(file: &str) -> Value {
        let text = match file {
            "all-MiniLM-L6-v2.json" => include_str!("../engine/tests/goldens/all-MiniLM-L6-v2.json"),
            "tiny-bge-m3.json" => include_str!("../engine/tests/goldens/tiny-bge-m3.json"),
            other => panic!("no goldens {other}"),
        };
        serde_json::from_str(text).expect("goldens JSON")
    }

    fn floats(v: &Value) -> Vec<f32> {
        v.as_array().expect("array").iter().map(|x| x.as_f64().expect("number") as f32).collect()
    }

    fn cosine(a: &[f32], b: &[f32]) -> f64 {
        assert_eq!(a.len(), b.len());
        let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
        let norm = |v: &[f32]| v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
        dot / (norm(a) * norm(b))
    }

    /// `query` with one text parameter, returning one real[].
    fn vector(query: &str, text: &str) -> Vec<f32> {
        Spi::get_one_with_args::<Vec<f32>>(query, &[text.into()]).expect("SPI").expect("not NULL")
    }

    /// Runs `sql` and checks it fails with SQLSTATE `state` (inside a plpgsql block, whose
    /// subtransaction keeps the test's transaction usable).
    fn expect_sqlstate(sql: &str, state: &str) {
        let block = format!(
            "DO $t$ BEGIN {sql}; RAISE EXCEPTION 'no error from: %', {q}; EXCEPTION WHEN SQLSTATE '{state}' THEN NULL; END $t$",
            q = pgrx::spi::quote_literal(sql)
        );
        Spi::run(&block).unwrap_or_else(|e| panic!("{sql}: expected SQLSTATE {state}: {e}"));
    }

    #[pg_test]
    fn minilm_matches_sentence_transformers() {
        let g = goldens("all-MiniLM-L6-v2.json");
        let texts = g["texts"].as_array().unwrap();
        for i in [0usize, 3, 7, 16, 25, 31] {
            let text = texts[i].as_str().unwrap();
            let want = floats(&g["mean256"]["embeddings"][i]);
            let got = vector("SELECT bge_embed($1, 'all-MiniLM-L6-v2')", text);
            let cos = cosine(&got, &want);
            assert!(cos >= 0.99999, "text {i}: cosine {cos}");
            let ids = Spi::get_one_with_args::<Vec<i32>>("SELECT bge_tokenize($1, 'all-MiniLM-L6-v2')", &[text.into()]).unwrap().unwrap();
            let want_ids: Vec<i32> = g["mean256"]["token_ids"][i].as_array().unwrap().iter().map(|x| x.as_i64().unwrap() as i32).collect();
            assert_eq!(ids, want_ids, "text {i}");
        }
    }

    #[pg_test]
    fn tiny_m3_dense_query_and_sparse_match_flagembedding() {
        let g = goldens("tiny-bge-m3.json");
        let texts = g["texts"].as_array().unwrap();
        for i in [3usize, 10, 20] {
            let text = texts[i].as_str().unwrap();
            let cos = cosine(&vector("SELECT bge_embed($1, 'tiny-bge-m3')", text), &floats(&g["dense"][i]));
            assert!(cos >= 0.99999, "dense {i}: cosine {cos}");
            let cos = cosine(&vector("SELECT bge_embed_query($1, 'tiny-bge-m3')", text), &floats(&g["query_dense"][i]));
            assert!(cos >= 0.99999, "query {i}: cosine {cos}");
            // Sparse weights by token id: the sparsevec text {id+1:w,...}/vocab.
            let literal = Spi::get_one_with_args::<String>("SELECT bge_sparse_text($1, 'tiny-bge-m3')", &[text.into()]).unwrap().unwrap();
            let body = literal.trim_start_matches('{').split('}').next().unwrap();
            let mut got: Vec<(i64, f64)> =
                body.split(',').filter(|s| !s.is_empty()).map(|kv| kv.split_once(':').map(|(k, v)| (k.parse::<i64>().unwrap() - 1, v.parse().unwrap())).unwrap()).collect();
            let mut want: Vec<(i64, f64)> = g["sparse"][i]["ids"].as_array().unwrap().iter().map(|p| (p[0].as_i64().unwrap(), p[1].as_f64().unwrap())).collect();
            got.sort_by_key(|p| p.0);
            want.sort_by_key(|p| p.0);
            assert_eq!(got.len(), want.len(), "sparse {i}");
            for ((gi, gw), (wi, ww)) in got.iter().zip(&want) {
                assert_eq!(gi, wi, "sparse {i}");
                assert!((gw - ww).abs() <= 1e-5 * ww.abs().max(1.0), "sparse {i} id {gi}: {gw} vs {ww}");
            }
        }
    }

    #[pg_test]
    fn array_form_equals_single_calls_bitwise() {
        let rows = Spi::get_one::<i64>(
            "WITH t(ord, body) AS (SELECT i, 'row ' || i || repeat(' padding', i % 13) FROM generate_series(1, 30) AS i)
             SELECT count(*) FILTER (WHERE b.e = bge_embed(t.body, 'all-MiniLM-L6-v2'))
             FROM t JOIN bge_embed(ARRAY(SELECT body FROM t ORDER BY ord), 'all-MiniLM-L6-v2') WITH ORDINALITY AS b(e, ord) USING (ord)",
        )
        .unwrap()
        .unwrap();
        assert_eq!(rows, 30);
    }

    #[pg_test]
    fn operators_match_an_independent_computation() {
        let bad = Spi::get_one::<i64>(
            "WITH v AS (SELECT i, array_agg(sin(i * j)::real ORDER BY j) AS a, array_agg(cos(i + j)::real ORDER BY j) AS b
                        FROM generate_series(1, 20) AS i, generate_series(1, 1 + i * 37) AS j GROUP BY i),
                  e AS (SELECT i, sum(x::float8 * y) AS dot, sqrt(sum(x::float8 * x)) AS na, sqrt(sum(y::float8 * y)) AS nb,
                               sqrt(sum((x::float8 - y) ^ 2)) AS l2 FROM v, unnest(a, b) AS u(x, y) GROUP BY i)
             SELECT count(*) FILTER (WHERE abs((a <=> b) - (1 - dot / (na * nb))) > 1e-9 OR abs((a <#> b) + dot) > 1e-9
                                     OR abs((a <-> b) - l2) > 1e-9)
             FROM v JOIN e USING (i)",
        )
        .unwrap()
        .unwrap();
        assert_eq!(bad, 0);
    }

    #[pg_test]
    fn errors_have_their_sqlstates() {
        expect_sqlstate("PERFORM bge_embed('x', 'no-such-model')", "42704");
        expect_sqlstate("PERFORM bge_embed('x', '../etc')", "22023");
        expect_sqlstate("PERFORM '{1,2}'::real[] <=> '{1,2,3}'::real[]", "22000");
        expect_sqlstate("PERFORM '{0,0}'::real[] <=> '{1,2}'::real[]", "22000");
        expect_sqlstate("PERFORM '{1,NULL}'::real[] <-> '{1,2}'::real[]", "22004");
        expect_sqlstate("SET LOCAL bge.truncate = off; PERFORM bge_embed(repeat('word ', 300))", "54000");
        expect_sqlstate("SET LOCAL bge.device = cuda; PERFORM bge_embed('x')", "0A000");
        expect_sqlstate("SET LOCAL bge.max_batch_tokens = 4194304", "22023");
    }

    #[pg_test]
    fn named_forms_ignore_settings() {
        let text = "Paris is the capital of France.";
        let before = vector("SELECT bge_embed($1, 'all-MiniLM-L6-v2')", text);
        Spi::run("SET LOCAL bge.truncate = off; SET LOCAL bge.threads = 1; SET LOCAL bge.max_batch_tokens = 3").unwrap();
        assert_eq!(vector("SELECT bge_embed($1, 'all-MiniLM-L6-v2')", text), before);
        let volatility = Spi::get_one::<String>("SELECT string_agg(DISTINCT provolatile::text, '') FROM pg_proc WHERE proname = 'bge_embed' AND pronargs = 2 AND NOT proretset").unwrap();
        assert_eq!(volatility.as_deref(), Some("i"));
        let volatility = Spi::get_one::<String>("SELECT provolatile::text FROM pg_proc WHERE proname = 'bge_embed' AND pronargs = 1 AND NOT proretset").unwrap();
        assert_eq!(volatility.as_deref(), Some("s"));
    }

    #[pg_test]
    fn model_dir_is_superuser_only() {
        Spi::run("CREATE ROLE regress_bge_user; SET LOCAL ROLE regress_bge_user").unwrap();
        expect_sqlstate("SET LOCAL bge.model_dir = '/tmp'", "42501");
        let dims = Spi::get_one::<i32>("SELECT array_length(bge_embed('ordinary users embed', 'all-MiniLM-L6-v2'), 1)").unwrap();
        assert_eq!(dims, Some(384));
    }
}
