//! bge-serve through its router, in process (tower's `oneshot`), on the tiny random-weight
//! BGE-M3-shaped model committed in engine/tests/models, plus a broken model directory. Hostile
//! requests first, then the three API shapes against sentence-transformers' goldens and against
//! the engine called directly (what SQL's bge_embed(text, model) computes), bitwise. Then
//! `/rerank` on the tiny rerankers, hostile first, against transformers' goldens and bitwise
//! against `Model::rerank` (what SQL's bge_rerank(query, passage, model) computes).
use std::path::{Path, PathBuf};
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use base64::Engine as _;
use bge_engine::backend::BackendKind;
use bge_engine::{Model, RunOptions};
use bge_serve::{Config, Server};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;

const MODEL: &str = "tiny-bge-m3";

fn engine_models() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../engine/tests/models")
}

/// A model directory: the tiny model (linked), a directory whose config.json is not JSON, a
/// directory that is not a model, and aliases.json.
fn model_dir() -> tempdir::TempDir {
    let dir = tempdir::TempDir::new();
    std::os::unix::fs::symlink(engine_models().join(MODEL), dir.path().join(MODEL)).unwrap();
    std::fs::create_dir(dir.path().join("broken-config")).unwrap();
    std::fs::write(dir.path().join("broken-config/config.json"), "{ not json").unwrap();
    std::fs::create_dir(dir.path().join("not-a-model")).unwrap();
    std::fs::write(dir.path().join("aliases.json"), r#"{"BAAI/bge-m3": "tiny-bge-m3", "bge_m3_hosted": "tiny-bge-m3"}"#).unwrap();
    dir
}

/// A scratch directory removed on drop (no tempfile crate in the workspace).
mod tempdir {
    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicUsize, Ordering};

    pub struct TempDir(PathBuf);

    impl TempDir {
        pub fn new() -> TempDir {
            static N: AtomicUsize = AtomicUsize::new(0);
            let path = std::env::temp_dir().join(format!("bge-serve-test-{}-{}", std::process::id(), N.fetch_add(1, Ordering::SeqCst)));
            let _ = std::fs::remove_dir_all(&path);
            std::fs::create_dir_all(&path).unwrap();
            TempDir(path)
        }

        pub fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

struct TestServer {
    router: Router,
    server: Option<Server>,
    _dir: tempdir::TempDir,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown();
        }
    }
}

fn start_with(adjust: impl FnOnce(&mut Config)) -> TestServer {
    let dir = model_dir();
    let mut config = Config::new(dir.path());
    config.device = bge_serve::engine::Device::Cpu;
    adjust(&mut config);
    let server = Server::start(config).expect("server starts");
    TestServer { router: server.router(), server: Some(server), _dir: dir }
}

fn start() -> TestServer {
    start_with(|_| {})
}

#[derive(Debug)]
struct Reply {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: Value,
}

async fn send(router: &Router, method: Method, uri: &str, headers: &[(&str, &str)], body: Vec<u8>) -> Reply {
    let mut request = Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let response = router.clone().oneshot(request.body(Body::from(body)).unwrap()).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let body = serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    Reply { status, headers, body }
}

async fn post(router: &Router, uri: &str, body: Value) -> Reply {
    send(router, Method::POST, uri, &[("content-type", "application/json")], body.to_string().into_bytes()).await
}

/// An OpenAI error reply: the status, and `{"error": {"message", "type", "param", "code"}}`.
fn assert_openai_error(reply: &Reply, status: StatusCode, kind: &str) {
    assert_eq!(reply.status, status, "body: {}", reply.body);
    let error = &reply.body["error"];
    assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()), "no message: {}", reply.body);
    assert_eq!(error["type"], kind, "body: {}", reply.body);
    assert!(error.get("param").is_some() && error.get("code").is_some(), "param and code must be present: {}", reply.body);
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array().expect("an array of numbers").iter().map(|x| x.as_f64().unwrap() as f32).collect()
}

/// The engine called as SQL's bge_embed(text, model) calls it: fp32 CPU, truncating.
fn engine_vectors(texts: &[&str]) -> Vec<Vec<f32>> {
    let model = Model::load(MODEL, &engine_models().join(MODEL), BackendKind::Cpu).unwrap();
    texts.iter().map(|t| model.embed(&[t], &RunOptions::default(), &mut || {}).unwrap().remove(0)).collect()
}

fn goldens() -> (Vec<String>, Vec<Vec<f32>>) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../engine/tests/goldens/tiny-bge-m3.json");
    let golden: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let texts = golden["texts"].as_array().unwrap().iter().map(|t| t.as_str().unwrap().to_string()).collect();
    let dense = golden["dense"].as_array().unwrap().iter().map(floats).collect();
    (texts, dense)
}

// ---- hostile requests ----

#[tokio::test]
async fn malformed_bodies_are_400_in_each_shape() {
    let s = start();
    for junk in [&b"{\"model\": \"tiny-bge-m3\", \"input\": "[..], b"", b"not json", b"[1,2", b"\xff\xfe\x00garbage"] {
        let r = send(&s.router, Method::POST, "/v1/embeddings", &[], junk.to_vec()).await;
        assert_openai_error(&r, StatusCode::BAD_REQUEST, "invalid_request_error");
        let r = send(&s.router, Method::POST, "/ai/run/@cf/baai/tiny-bge-m3", &[], junk.to_vec()).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
        assert_eq!(r.body["success"], false);
        assert!(r.body["errors"][0]["message"].is_string(), "{}", r.body);
        let r = send(&s.router, Method::POST, "/rpc/2.0/ai_custom/v1/wenxinworkshop/embeddings/tiny-bge-m3", &[], junk.to_vec()).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
        assert_eq!(r.body["error_code"], 336003);
        assert!(r.body["error_msg"].is_string());
    }
}

#[tokio::test]
async fn invalid_utf8_inside_a_json_string_is_400() {
    let s = start();
    let mut body = br#"{"model": "tiny-bge-m3", "input": ""#.to_vec();
    body.extend_from_slice(b"abc\xc3\x28def");
    body.extend_from_slice(br#""}"#);
    let r = send(&s.router, Method::POST, "/v1/embeddings", &[("content-type", "application/json")], body).await;
    assert_openai_error(&r, StatusCode::BAD_REQUEST, "invalid_request_error");
}

#[tokio::test]
async fn wrong_types_missing_fields_and_bad_parameters_are_400_naming_the_parameter() {
    let s = start();
    let cases = [
        (json!({"input": "a"}), "model"),
        (json!({"model": MODEL}), "input"),
        (json!({"model": 7, "input": "a"}), "model"),
        (json!({"model": MODEL, "input": 5}), "input"),
        (json!({"model": MODEL, "input": {"text": "a"}}), "input"),
        (json!({"model": MODEL, "input": ["a", 1]}), "input"),
        (json!({"model": MODEL, "input": [[1, 2], "a"]}), "input"),
        (json!({"model": MODEL, "input": [1.5]}), "input"),
        (json!({"model": MODEL, "input": [-1]}), "input"),
        (json!({"model": MODEL, "input": [[]]}), "input"),
        (json!({"model": MODEL, "input": [[true]]}), "input"),
        (json!({"model": MODEL, "input": ""}), "input"),
        (json!({"model": MODEL, "input": []}), "input"),
        (json!({"model": MODEL, "input": ["ok", ""]}), "input"),
        (json!({"model": MODEL, "input": [1_000_000]}), "input"),
        (json!({"model": MODEL, "input": "a", "encoding_format": "int8"}), "encoding_format"),
        (json!({"model": MODEL, "input": "a", "encoding_format": 1}), "encoding_format"),
        (json!({"model": MODEL, "input": "a", "dimensions": 0}), "dimensions"),
        (json!({"model": MODEL, "input": "a", "dimensions": -3}), "dimensions"),
        (json!({"model": MODEL, "input": "a", "dimensions": 2.5}), "dimensions"),
        (json!({"model": MODEL, "input": "a", "dimensions": "8"}), "dimensions"),
        (json!({"model": MODEL, "input": "a", "dimensions": 33}), "dimensions"),
        (json!([{"model": MODEL, "input": "a"}]), ""),
    ];
    for (body, param) in cases {
        let r = post(&s.router, "/v1/embeddings", body.clone()).await;
        assert_openai_error(&r, StatusCode::BAD_REQUEST, "invalid_request_error");
        if !param.is_empty() {
            assert_eq!(r.body["error"]["param"], param, "request {body}: {}", r.body);
        }
    }
}

#[tokio::test]
async fn too_many_inputs_and_too_large_bodies_are_refused_cleanly() {
    let s = start_with(|c| c.max_body_bytes = 256 << 10);
    let r = post(&s.router, "/v1/embeddings", json!({"model": MODEL, "input": vec!["a"; 2049]})).await;
    assert_openai_error(&r, StatusCode::BAD_REQUEST, "invalid_request_error");
    assert!(r.body["error"]["message"].as_str().unwrap().contains("2048"), "{}", r.body);
    // 100,000 inputs: larger than the body limit here, so 413 before any parsing.
    let r = post(&s.router, "/v1/embeddings", json!({"model": MODEL, "input": vec!["word"; 100_000]})).await;
    assert_openai_error(&r, StatusCode::PAYLOAD_TOO_LARGE, "invalid_request_error");
    let r = post(&s.router, "/rpc/2.0/ai_custom/v1/wenxinworkshop/embeddings/tiny-bge-m3", json!({"input": vec!["a"; 2049]})).await;
    assert_eq!((r.status, r.body["error_code"].clone()), (StatusCode::BAD_REQUEST, json!(336003)));
    let ten_mb = "x".repeat(10 << 20);
    for uri in ["/v1/embeddings", "/ai/run/@cf/baai/tiny-bge-m3", "/rpc/2.0/ai_custom/v1/wenxinworkshop/embeddings/tiny-bge-m3"] {
        let r = post(&s.router, uri, json!({"model": MODEL, "input": [ten_mb], "text": [ten_mb]})).await;
        assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{uri}: {}", r.body);
    }
    // 100,000 inputs under a limit that lets them through: parsed, then refused as too many.
    let s = start_with(|c| c.max_body_bytes = 8 << 20);
    let r = post(&s.router, "/v1/embeddings", json!({"model": MODEL, "input": vec!["word"; 100_000]})).await;
    assert_openai_error(&r, StatusCode::BAD_REQUEST, "invalid_request_error");
    // The server is fine afterwards.
    let r = post(&s.router, "/v1/embeddings", json!({"model": MODEL, "input": "still here"})).await;
    assert_eq!(r.status, StatusCode::OK);
}

#[tokio::test]
async fn unknown_models_and_routes_are_404() {
    let s = start();
    let r = post(&s.router, "/v1/embeddings", json!({"model": "text-embedding-3-small", "input": "a"})).await;
    assert_openai_error(&r, StatusCode::NOT_FOUND, "invalid_request_error");
    assert_eq!(r.body["error"]["code"], "model_not_found");
    // A directory that failed to load is not served.
    let r = post(&s.router, "/v1/embeddings", json!({"model": "broken-config", "input": "a"})).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = post(&s.router, "/ai/run/@cf/baai/bge-small-en-v1.5", json!({"text": "a"})).await;
    assert_eq!((r.status, r.body["success"].clone()), (StatusCode::NOT_FOUND, json!(false)));
    let r = post(&s.router, "/rpc/2.0/ai_custom/v1/wenxinworkshop/embeddings/bge_large_en", json!({"input": ["a"]})).await;
    assert_eq!((r.status, r.body["error_code"].clone()), (StatusCode::NOT_FOUND, json!(336005)));
    let r = post(&s.router, "/v2/nothing", json!({})).await;
    assert_openai_error(&r, StatusCode::NOT_FOUND, "invalid_request_error");
    let r = send(&s.router, Method::GET, "/v1/embeddings", &[], vec![]).await;
    assert_openai_error(&r, StatusCode::METHOD_NOT_ALLOWED, "invalid_request_error");
}

#[tokio::test]
async fn an_api_key_is_required_when_configured() {
    let s = start_with(|c| c.api_key = Some("sekrit".into()));
    let body = json!({"model": MODEL, "input": "a"}).to_string().into_bytes();
    let r = send(&s.router, Method::POST, "/v1/embeddings", &[], body.clone()).await;
    assert_openai_error(&r, StatusCode::UNAUTHORIZED, "invalid_request_error");
    assert_eq!(r.body["error"]["code"], "invalid_api_key");
    let r = send(&s.router, Method::POST, "/v1/embeddings", &[("authorization", "Bearer wrong")], body.clone()).await;
    assert_openai_error(&r, StatusCode::UNAUTHORIZED, "invalid_request_error");
    // The key is checked before the body is parsed: junk without a key is 401, not 400.
    let r = send(&s.router, Method::POST, "/v1/embeddings", &[], b"junk".to_vec()).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = send(&s.router, Method::POST, "/v1/embeddings", &[("authorization", "Bearer sekrit")], body).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = send(&s.router, Method::POST, "/ai/run/@cf/baai/tiny-bge-m3", &[], json!({"text": "a"}).to_string().into_bytes()).await;
    assert_eq!((r.status, r.body["success"].clone()), (StatusCode::UNAUTHORIZED, json!(false)));
    let uri = "/rpc/2.0/ai_custom/v1/wenxinworkshop/embeddings/tiny-bge-m3";
    let r = send(&s.router, Method::POST, uri, &[], json!({"input": ["a"]}).to_string().into_bytes()).await;
    assert_eq!((r.status, r.body["error_code"].clone()), (StatusCode::UNAUTHORIZED, json!(110)));
    let r = send(&s.router, Method::POST, &format!("{uri}?access_token=sekrit"), &[], json!({"input": ["a"]}).to_string().into_bytes()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    // Health and metrics stay open for probes.
    assert_eq!(send(&s.router, Method::GET, "/health", &[], vec![]).await.status, StatusCode::OK);
}

#[tokio::test]
async fn a_full_queue_answers_429_with_retry_after_and_the_first_request_still_completes() {
    let s = start_with(|c| {
        c.max_queue = 1;
        c.max_batch_tokens = 256;
    });
    let state = s.server.as_ref().unwrap().state.clone();
    // One request long enough to keep the engine busy for a while.
    let long = "Tables hold rows and the rows hold text. ".repeat(20);
    let big = json!({"model": MODEL, "input": vec![long; 256]});
    let router = s.router.clone();
    let first = tokio::spawn(async move { post(&router, "/v1/embeddings", big).await });
    let mut waited = 0;
    while state.batcher.pending() == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
        waited += 1;
        assert!(waited < 4000, "the first request never reached the queue");
    }
    let r = post(&s.router, "/v1/embeddings", json!({"model": MODEL, "input": "one more"})).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.body);
    assert_eq!(r.headers.get(header::RETRY_AFTER).unwrap(), "1");
    assert_eq!(r.body["error"]["code"], "rate_limit_exceeded");
    let first = first.await.unwrap();
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(first.body["data"].as_array().unwrap().len(), 256);
    let r = post(&s.router, "/v1/embeddings", json!({"model": MODEL, "input": "one more"})).await;
    assert_eq!(r.status, StatusCode::OK);
}

#[tokio::test]
async fn a_client_that_goes_away_cancels_its_work_and_others_are_unaffected() {
    let s = start_with(|c| c.max_batch_tokens = 256);
    let state = s.server.as_ref().unwrap().state.clone();
    let long = "Tables hold rows and the rows hold text. ".repeat(60);
    let big = json!({"model": MODEL, "input": vec![long; 512]});
    // Dropped while its texts are tokenised: what a client disconnecting early does.
    assert!(tokio::time::timeout(Duration::from_millis(5), post(&s.router, "/v1/embeddings", big.clone())).await.is_err());
    // Dropped while queued or computing (aborting the task drops the handler's future).
    for _ in 0..2 {
        let router = s.router.clone();
        let body = big.clone();
        let task = tokio::spawn(async move { post(&router, "/v1/embeddings", body).await });
        let mut waited = 0;
        while state.batcher.pending() == 0 {
            tokio::time::sleep(Duration::from_millis(2)).await;
            waited += 1;
            assert!(waited < 5000, "the request never reached the queue");
        }
        task.abort();
        assert!(task.await.unwrap_err().is_cancelled());
    }
    let r = post(&s.router, "/v1/embeddings", json!({"model": MODEL, "input": ["after", "the", "disconnects"]})).await;
    assert_eq!(r.status, StatusCode::OK);
    let mut waited = 0;
    while state.batcher.pending() != 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
        waited += 1;
        assert!(waited < 3000, "abandoned requests still pending: {}", state.batcher.pending());
    }
    let metrics = send(&s.router, Method::GET, "/metrics", &[], vec![]).await;
    let text = metrics.body.as_str().unwrap().to_string();
    let cancelled: u64 = text.lines().find_map(|l| l.strip_prefix("bge_serve_cancelled_total ")).unwrap().parse().unwrap();
    assert!(cancelled >= 1, "no abandoned request was cancelled:\n{text}");
}

// ---- the API shapes and their vectors ----

#[tokio::test]
async fn openai_vectors_match_sentence_transformers_and_the_engine_bitwise() {
    let s = start();
    let (texts, golden) = goldens();
    let mut texts = texts;
    let mut golden = golden;
    // OpenAI refuses empty strings; the others (whitespace included) are embedded.
    let first_nonempty = texts.iter().position(|t| !t.is_empty()).unwrap();
    texts.drain(..first_nonempty);
    golden.drain(..first_nonempty);
    let r = post(&s.router, "/v1/embeddings", json!({"model": "BAAI/bge-m3", "input": texts, "user": "ignored"})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["object"], "list");
    assert_eq!(r.body["model"], "BAAI/bge-m3");
    let data = r.body["data"].as_array().unwrap();
    assert_eq!(data.len(), texts.len());
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let engine = engine_vectors(&refs);
    let mut total_tokens = 0;
    let model = Model::load(MODEL, &engine_models().join(MODEL), BackendKind::Cpu).unwrap();
    for (i, item) in data.iter().enumerate() {
        assert_eq!(item["object"], "embedding");
        assert_eq!(item["index"], i);
        let v = floats(&item["embedding"]);
        assert_eq!(v, engine[i], "text {i} differs from the engine's vector");
        let worst = v.iter().zip(&golden[i]).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(worst < 1e-5, "text {i} ({:?}) is {worst} from sentence-transformers", texts[i]);
        total_tokens += model.count_tokens(&texts[i], bge_engine::TextRole::Passage, true, &mut || {}).unwrap();
    }
    assert_eq!(r.body["usage"]["prompt_tokens"], total_tokens);
    assert_eq!(r.body["usage"]["total_tokens"], total_tokens);
}

#[tokio::test]
async fn concurrent_requests_batched_together_get_the_vectors_each_gets_alone() {
    let s = start_with(|c| c.max_batch_tokens = 512);
    let texts: Vec<String> = (0..48).map(|i| format!("request {i}: {}", "some words about tables and rows ".repeat(i % 9 + 1))).collect();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let expected = engine_vectors(&refs);
    let mut tasks = Vec::new();
    for (i, t) in texts.iter().enumerate() {
        let router = s.router.clone();
        let body = json!({"model": MODEL, "input": t});
        tasks.push(tokio::spawn(async move { (i, post(&router, "/v1/embeddings", body).await) }));
    }
    for task in tasks {
        let (i, r) = task.await.unwrap();
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(floats(&r.body["data"][0]["embedding"]), expected[i], "request {i}");
    }
    let metrics = send(&s.router, Method::GET, "/metrics", &[], vec![]).await;
    let text = metrics.body.as_str().unwrap();
    for name in ["bge_serve_requests_total{route=\"/v1/embeddings\",status=\"200\"} 48", "bge_serve_batch_inputs_count", "bge_serve_request_duration_seconds_bucket", "bge_serve_queue_depth", "bge_serve_tokens_total"] {
        assert!(text.contains(name), "/metrics lacks {name}:\n{text}");
    }
}

#[tokio::test]
async fn base64_dimensions_and_token_arrays() {
    let s = start();
    let text = "Paris is the capital of France.";
    let expected = engine_vectors(&[text]).remove(0);
    let r = post(&s.router, "/v1/embeddings", json!({"model": MODEL, "input": [text], "encoding_format": "base64"})).await;
    assert_eq!(r.status, StatusCode::OK);
    let bytes = base64::engine::general_purpose::STANDARD.decode(r.body["data"][0]["embedding"].as_str().unwrap()).unwrap();
    let decoded: Vec<f32> = bytes.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
    assert_eq!(decoded, expected);

    let r = post(&s.router, "/v1/embeddings", json!({"model": MODEL, "input": text, "dimensions": 8})).await;
    let short = floats(&r.body["data"][0]["embedding"]);
    assert_eq!(short.len(), 8);
    let norm: f32 = short.iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!((norm - 1.0).abs() < 1e-6, "norm {norm}");
    let head_norm: f32 = expected[..8].iter().map(|x| x * x).sum::<f32>().sqrt();
    for (a, b) in short.iter().zip(&expected[..8]) {
        assert!((a - b / head_norm).abs() < 1e-6);
    }
    let r = post(&s.router, "/v1/embeddings", json!({"model": MODEL, "input": text, "dimensions": 32})).await;
    assert_eq!(floats(&r.body["data"][0]["embedding"]), expected, "dimensions equal to the model's leave the vector as computed");

    // Token arrays are the model's own ids, without the special tokens the tokenizer adds.
    let model = Model::load(MODEL, &engine_models().join(MODEL), BackendKind::Cpu).unwrap();
    let ids = model.tokenizer.encode(text, true).unwrap().ids;
    let content = &ids[1..ids.len() - 1];
    let r = post(&s.router, "/v1/embeddings", json!({"model": MODEL, "input": content})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(floats(&r.body["data"][0]["embedding"]), expected);
    assert_eq!(r.body["usage"]["prompt_tokens"], ids.len());
    let r = post(&s.router, "/v1/embeddings", json!({"model": MODEL, "input": [content, content]})).await;
    assert_eq!(r.body["data"].as_array().unwrap().len(), 2);
    assert_eq!(floats(&r.body["data"][1]["embedding"]), expected);
    // Longer than max_seq_length (8192 with the special tokens): truncated like a text.
    let long: Vec<u32> = (0..10_000).map(|i| 5 + i % 500).collect();
    let r = post(&s.router, "/v1/embeddings", json!({"model": MODEL, "input": [long.clone()]})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["usage"]["prompt_tokens"], 8192);
    let r2 = post(&s.router, "/v1/embeddings", json!({"model": MODEL, "input": [&long[..8190]]})).await;
    assert_eq!(r.body["data"][0]["embedding"], r2.body["data"][0]["embedding"]);
    let r = post(&s.router, "/v1/embeddings", json!({"model": MODEL, "input": [579]})).await;
    assert_openai_error(&r, StatusCode::BAD_REQUEST, "invalid_request_error");
}

#[tokio::test]
async fn cloudflare_and_baidu_shapes() {
    let s = start();
    let texts = ["Paris is the capital of France.", "a"];
    let expected = engine_vectors(&texts);
    for uri in ["/ai/run/@cf/baai/tiny-bge-m3", "/client/v4/accounts/abc123/ai/run/@cf/baai/tiny_bge_m3"] {
        let r = post(&s.router, uri, json!({"text": texts})).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        assert_eq!(r.body["success"], true);
        assert_eq!(r.body["errors"], json!([]));
        assert_eq!(r.body["messages"], json!([]));
        assert_eq!(r.body["result"]["shape"], json!([2, 32]));
        assert_eq!(floats(&r.body["result"]["data"][0]), expected[0]);
        assert_eq!(floats(&r.body["result"]["data"][1]), expected[1]);
    }
    let r = post(&s.router, "/ai/run/@cf/baai/tiny-bge-m3", json!({"text": "a"})).await;
    assert_eq!(r.body["result"]["shape"], json!([1, 32]));
    assert_eq!(floats(&r.body["result"]["data"][0]), expected[1]);
    for bad in [json!({}), json!({"text": 3}), json!({"text": []}), json!({"text": ["a", null]})] {
        let r = post(&s.router, "/ai/run/@cf/baai/tiny-bge-m3", bad.clone()).await;
        assert_eq!((r.status, r.body["success"].clone()), (StatusCode::BAD_REQUEST, json!(false)), "{bad}");
    }

    let uri = "/rpc/2.0/ai_custom/v1/wenxinworkshop/embeddings/bge_m3_hosted";
    let r = post(&s.router, uri, json!({"input": texts, "user_id": "u1"})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["object"], "embedding_list");
    assert!(r.body["id"].as_str().is_some_and(|id| !id.is_empty()));
    assert!(r.body["created"].as_u64().unwrap() > 1_600_000_000);
    for (i, vector) in expected.iter().enumerate() {
        assert_eq!(r.body["data"][i]["object"], "embedding");
        assert_eq!(r.body["data"][i]["index"], i);
        assert_eq!(&floats(&r.body["data"][i]["embedding"]), vector);
    }
    assert!(r.body["usage"]["prompt_tokens"].as_u64().unwrap() > 0);
    assert_eq!(r.body["usage"]["prompt_tokens"], r.body["usage"]["total_tokens"]);
    for bad in [json!({}), json!({"input": []}), json!({"input": "a"}), json!({"input": [""]}), json!({"input": [1]})] {
        let r = post(&s.router, uri, bad.clone()).await;
        assert_eq!((r.status, r.body["error_code"].clone()), (StatusCode::BAD_REQUEST, json!(336003)), "{bad}: {}", r.body);
        assert!(r.body["error_msg"].is_string());
    }
}

#[tokio::test]
async fn health_lists_served_and_failed_directories_and_models_lists_the_served() {
    let s = start();
    let r = send(&s.router, Method::GET, "/health", &[], vec![]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["status"], "degraded");
    assert_eq!(r.body["models"][0]["name"], MODEL);
    assert_eq!(r.body["models"][0]["dimensions"], 32);
    assert_eq!(r.body["models"][0]["kind"], "embedder");
    assert_eq!(r.body["models"][0]["aliases"], json!(["BAAI/bge-m3", "bge_m3_hosted"]));
    let failed = r.body["failed"].as_array().unwrap();
    assert_eq!(failed.len(), 1, "{}", r.body);
    assert_eq!(failed[0]["directory"], "broken-config");
    let error = failed[0]["error"].as_str().unwrap();
    assert!(error.contains("config.json") && !error.contains(&std::env::temp_dir().display().to_string()), "{error}");
    let r = send(&s.router, Method::GET, "/v1/models", &[], vec![]).await;
    assert_eq!(r.body["data"], json!([{"id": MODEL, "object": "model", "created": 0, "owned_by": "pg_bge", "kind": "embedder"}]));
}

#[tokio::test]
async fn an_unreadable_model_directory_is_the_only_fatal_error_and_a_bad_aliases_file_is_reported() {
    let mut config = Config::new("/nonexistent/bge-serve-models");
    config.device = bge_serve::engine::Device::Cpu;
    let error = Server::start(config).err().expect("a missing directory is an error");
    assert!(error.contains("/nonexistent/bge-serve-models"), "{error}");
    // An empty directory serves nothing, and /health says so with 503.
    let dir = tempdir::TempDir::new();
    let server = Server::start(Config::new(dir.path())).unwrap();
    let r = send(&server.router(), Method::GET, "/health", &[], vec![]).await;
    assert_eq!((r.status, r.body["status"].clone()), (StatusCode::SERVICE_UNAVAILABLE, json!("no_models")));
    server.shutdown();
    // An invalid aliases.json loses its aliases, not the server; /health says why.
    let dir = model_dir();
    std::fs::write(dir.path().join("aliases.json"), "[\"not an object\"]").unwrap();
    let mut config = Config::new(dir.path());
    config.device = bge_serve::engine::Device::Cpu;
    let server = Server::start(config).unwrap();
    let router = server.router();
    let r = send(&router, Method::GET, "/health", &[], vec![]).await;
    let failed = r.body["failed"].as_array().unwrap();
    assert!(failed.iter().any(|f| f["directory"] == "aliases.json" && f["error"].as_str().unwrap().contains("expected")), "{}", r.body);
    let r = post(&router, "/v1/embeddings", json!({"model": "BAAI/bge-m3", "input": "a"})).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = post(&router, "/v1/embeddings", json!({"model": "TINY_BGE_M3", "input": "a"})).await;
    assert_eq!(r.status, StatusCode::OK, "the name rule still applies: {}", r.body);
    server.shutdown();
}

#[tokio::test]
async fn an_engine_error_or_panic_fails_its_requests_and_the_engine_thread_goes_on() {
    let s = start();
    let state = s.server.as_ref().unwrap().state.clone();
    let model = state.names.resolve(MODEL).unwrap();
    // Ids far outside the vocabulary, past the HTTP layer's check: the embedding lookup cannot
    // serve them, and whether the engine errors or panics, the answer is a failure, not a crash.
    let bad = bge_engine::tokenize::Encoded { ids: vec![0, 4_000_000_000, 2], type_ids: vec![0; 3] };
    let reply = state.batcher.submit(model.clone(), bge_serve::engine::Work::Embed, vec![bad]).unwrap();
    let outcome = reply.await.expect("the engine thread answers");
    assert!(matches!(outcome, Err(bge_serve::engine::EngineFailure::Refused(_) | bge_serve::engine::EngineFailure::Error(_))), "{outcome:?}");
    // Token types missing: the engine indexes past them and panics; the panic is caught.
    let broken = bge_engine::tokenize::Encoded { ids: vec![0, 5, 2], type_ids: vec![] };
    let reply = state.batcher.submit(model.clone(), bge_serve::engine::Work::Embed, vec![broken]).unwrap();
    let outcome = reply.await.expect("the engine thread answers");
    assert!(matches!(outcome, Err(bge_serve::engine::EngineFailure::Panic)), "{outcome:?}");
    assert_eq!(state.metrics.engine_panics.load(std::sync::atomic::Ordering::Relaxed), 1);
    assert_eq!(state.batcher.pending(), 0);
    let r = post(&s.router, "/v1/embeddings", json!({"model": MODEL, "input": "after the failure"})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
}

// ---- /rerank (text-embeddings-inference's shape) ----

const RERANKERS: [&str; 2] = ["tiny-reranker-bert", "tiny-reranker-xlmr"];

/// A server over the embedder and `rerankers` (linked from engine/tests/models).
fn start_rerankers(rerankers: &[&str], adjust: impl FnOnce(&mut Config)) -> TestServer {
    let dir = tempdir::TempDir::new();
    for name in std::iter::once(MODEL).chain(rerankers.iter().copied()) {
        std::os::unix::fs::symlink(engine_models().join(name), dir.path().join(name)).unwrap();
    }
    let mut config = Config::new(dir.path());
    config.device = bge_serve::engine::Device::Cpu;
    adjust(&mut config);
    let server = Server::start(config).expect("server starts");
    TestServer { router: server.router(), server: Some(server), _dir: dir }
}

/// A TEI error reply: the status and `{"error": str, "error_type": str}`, nothing else.
fn assert_tei_error(reply: &Reply, status: StatusCode, error_type: &str) -> String {
    assert_eq!(reply.status, status, "body: {}", reply.body);
    assert_eq!(reply.body["error_type"], error_type, "body: {}", reply.body);
    assert_eq!(reply.body.as_object().map(|o| o.len()), Some(2), "body: {}", reply.body);
    let message = reply.body["error"].as_str().expect("error is a string").to_string();
    assert!(!message.is_empty());
    message
}

/// The engine called as SQL's bge_rerank(query, passage, model) calls it: one pair, fp32 CPU.
fn engine_logits(name: &str, query: &str, passages: &[&str]) -> Vec<f32> {
    let model = Model::load(name, &engine_models().join(name), BackendKind::Cpu).unwrap();
    passages.iter().map(|p| model.rerank(query, &[p], &RunOptions::default(), &mut || {}).unwrap()[0]).collect()
}

fn sigmoid(x: f32) -> f64 {
    1.0 / (1.0 + (-(x as f64)).exp())
}

/// A ranking's (index, score as f32 for raw / f64 otherwise) in reply order, checked sorted.
fn ranking(reply: &Reply) -> Vec<(usize, f64)> {
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let items = reply.body.as_array().expect("a JSON array");
    let ranked: Vec<(usize, f64)> = items.iter().map(|i| (i["index"].as_u64().unwrap() as usize, i["score"].as_f64().unwrap())).collect();
    for w in ranked.windows(2) {
        assert!(w[0].1 > w[1].1 || (w[0].1 == w[1].1 && w[0].0 < w[1].0), "not sorted by score then index: {ranked:?}");
    }
    let mut indexes: Vec<usize> = ranked.iter().map(|r| r.0).collect();
    indexes.sort();
    assert_eq!(indexes, (0..items.len()).collect::<Vec<_>>(), "every index once");
    ranked
}

#[tokio::test]
async fn rerank_refuses_junk_wrong_types_and_too_many_texts_in_teis_error_shape() {
    let s = start_rerankers(&RERANKERS, |c| c.max_body_bytes = 1 << 20);
    for junk in [&b"{\"query\": \"a\", \"texts\": "[..], b"", b"not json", b"[1,2", b"\xff\xfe\x00garbage", b"\"just a string\"", b"[]", b"null"] {
        let r = send(&s.router, Method::POST, "/rerank", &[], junk.to_vec()).await;
        assert_tei_error(&r, StatusCode::BAD_REQUEST, "Validation");
    }
    let m = RERANKERS[0];
    let cases = [
        json!({"texts": ["a"], "model": m}),
        json!({"query": "q", "model": m}),
        json!({"query": null, "texts": ["a"], "model": m}),
        json!({"query": 5, "texts": ["a"], "model": m}),
        json!({"query": ["q"], "texts": ["a"], "model": m}),
        json!({"query": "q", "texts": [], "model": m}),
        json!({"query": "q", "texts": "a", "model": m}),
        json!({"query": "q", "texts": ["a", 1], "model": m}),
        json!({"query": "q", "texts": [["a"]], "model": m}),
        json!({"query": "q", "texts": [null], "model": m}),
        json!({"query": "q", "texts": ["a"], "raw_scores": "yes", "model": m}),
        json!({"query": "q", "texts": ["a"], "return_text": 1, "model": m}),
        json!({"query": "q", "texts": ["a"], "truncate": "false", "model": m}),
        json!({"query": "q", "texts": ["a"], "model": 7}),
        json!({"query": "q", "texts": vec!["a"; 2049], "model": m}),
    ];
    for body in cases {
        let r = post(&s.router, "/rerank", body.clone()).await;
        assert_tei_error(&r, StatusCode::BAD_REQUEST, "Validation");
    }
    // 10,000 texts: refused by count, before any tokenising, quickly.
    let started = std::time::Instant::now();
    let r = post(&s.router, "/rerank", json!({"query": "q", "texts": vec!["a passage"; 10_000], "model": m})).await;
    let message = assert_tei_error(&r, StatusCode::BAD_REQUEST, "Validation");
    assert!(message.contains("10000") && message.contains("2048"), "{message}");
    assert!(started.elapsed() < Duration::from_secs(5));
    // Over the body limit: 413 in TEI's shape, declared or not.
    let big = "x".repeat(2 << 20);
    let r = post(&s.router, "/rerank", json!({"query": "q", "texts": [big], "model": m})).await;
    assert_tei_error(&r, StatusCode::PAYLOAD_TOO_LARGE, "Validation");
    // Two rerankers served: `model` is needed, and the reply names them.
    let r = post(&s.router, "/rerank", json!({"query": "q", "texts": ["a"]})).await;
    let message = assert_tei_error(&r, StatusCode::BAD_REQUEST, "Validation");
    assert!(message.contains("model") && message.contains(RERANKERS[0]) && message.contains(RERANKERS[1]), "{message}");
    // An unknown model is 404; an embedder is 400 saying it is an embedder.
    let r = post(&s.router, "/rerank", json!({"query": "q", "texts": ["a"], "model": "bge-reranker-v2-m3"})).await;
    let message = assert_tei_error(&r, StatusCode::NOT_FOUND, "Validation");
    assert!(message.contains("bge-reranker-v2-m3") && message.contains(RERANKERS[0]), "{message}");
    let r = post(&s.router, "/rerank", json!({"query": "q", "texts": ["a"], "model": MODEL})).await;
    let message = assert_tei_error(&r, StatusCode::BAD_REQUEST, "Validation");
    assert!(message.contains(MODEL) && message.contains("embedder"), "{message}");
    // Wrong method, and the server is fine afterwards.
    let r = send(&s.router, Method::GET, "/rerank", &[], vec![]).await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    let r = post(&s.router, "/rerank", json!({"query": "q", "texts": ["a"], "model": m})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
}

#[tokio::test]
async fn rerank_requires_the_api_key_when_configured() {
    let s = start_rerankers(&RERANKERS[..1], |c| c.api_key = Some("sekrit".into()));
    let body = json!({"query": "q", "texts": ["a"]}).to_string().into_bytes();
    let r = send(&s.router, Method::POST, "/rerank", &[], body.clone()).await;
    assert_tei_error(&r, StatusCode::UNAUTHORIZED, "Unauthorized");
    let r = send(&s.router, Method::POST, "/rerank", &[("authorization", "Bearer sekrit")], body).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
}

#[tokio::test]
async fn a_reranker_given_to_the_embedding_routes_is_a_400_saying_so() {
    let s = start_rerankers(&RERANKERS, |_| {});
    for name in RERANKERS {
        let r = post(&s.router, "/v1/embeddings", json!({"model": name, "input": "a"})).await;
        assert_openai_error(&r, StatusCode::BAD_REQUEST, "invalid_request_error");
        let message = r.body["error"]["message"].as_str().unwrap();
        assert!(message.contains(name) && message.contains("reranker") && message.contains("/rerank"), "{message}");
        assert_eq!(r.body["error"]["param"], "model");
        let r = post(&s.router, &format!("/ai/run/@cf/baai/{name}"), json!({"text": ["a"]})).await;
        assert_eq!((r.status, r.body["success"].clone()), (StatusCode::BAD_REQUEST, json!(false)), "{}", r.body);
        let r = post(&s.router, &format!("/rpc/2.0/ai_custom/v1/wenxinworkshop/embeddings/{name}"), json!({"input": ["a"]})).await;
        assert_eq!((r.status, r.body["error_code"].clone()), (StatusCode::BAD_REQUEST, json!(336003)), "{}", r.body);
    }
    // /health and /v1/models say which model is which.
    let r = send(&s.router, Method::GET, "/health", &[], vec![]).await;
    let kinds: Vec<(String, String)> = r.body["models"].as_array().unwrap().iter().map(|m| (m["name"].as_str().unwrap().into(), m["kind"].as_str().unwrap().into())).collect();
    assert_eq!(kinds, [(MODEL.into(), "embedder".into()), (RERANKERS[0].into(), "reranker".into()), (RERANKERS[1].into(), "reranker".into())]);
    let r = send(&s.router, Method::GET, "/v1/models", &[], vec![]).await;
    let kinds: Vec<&str> = r.body["data"].as_array().unwrap().iter().map(|m| m["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["embedder", "reranker", "reranker"]);
}

#[tokio::test]
async fn rerank_scores_are_bge_rerank_bitwise_sorted_with_index_and_text() {
    let s = start_rerankers(&RERANKERS, |_| {});
    let query = "what is the capital of France?";
    let passages = ["Paris is the capital of France.", "The Eiffel Tower is in Paris.", "", "Bananas are yellow.", "Paris is the capital of France.", &"Berlin is the capital of Germany. ".repeat(200)];
    for name in RERANKERS {
        let expected = engine_logits(name, query, &passages);
        // raw_scores: the f32 logit, parsed back bitwise.
        let r = post(&s.router, "/rerank", json!({"query": query, "texts": passages, "raw_scores": true, "model": name})).await;
        let ranked = ranking(&r);
        for (index, score) in &ranked {
            assert_eq!((*score as f32).to_bits(), expected[*index].to_bits(), "{name} text {index}");
        }
        assert!(r.body.as_array().unwrap().iter().all(|i| i.get("text").is_none()), "no text unless asked: {}", r.body);
        // Identical passages score identically and keep input order.
        let pos = |i: usize| ranked.iter().position(|r| r.0 == i).unwrap();
        assert!(pos(0) < pos(4));
        // Default: the sigmoid of the logit, in f64; return_text gives each text back.
        let r = post(&s.router, "/rerank", json!({"query": query, "texts": passages, "return_text": true, "truncate": true, "model": name})).await;
        let ranked2 = ranking(&r);
        for (item, (index, score)) in r.body.as_array().unwrap().iter().zip(&ranked2) {
            assert_eq!(score.to_bits(), sigmoid(expected[*index]).to_bits(), "{name} text {index}");
            assert_eq!(item["text"], passages[*index]);
        }
        assert_eq!(ranked.iter().map(|r| r.0).collect::<Vec<_>>(), ranked2.iter().map(|r| r.0).collect::<Vec<_>>());
    }
}

#[tokio::test]
async fn rerank_scores_match_transformers_goldens() {
    let s = start_rerankers(&RERANKERS, |c| c.max_batch_tokens = 1024);
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../engine/tests/goldens/rerankers.json");
    let goldens: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    for name in RERANKERS {
        let pairs = goldens[name]["pairs"].as_array().unwrap();
        // One request per query with all of its passages (the longest pair is cut to 512 tokens).
        let mut queries: Vec<&str> = pairs.iter().map(|p| p["query"].as_str().unwrap()).collect();
        queries.sort();
        queries.dedup();
        let mut checked = 0;
        let mut longest = 0;
        for query in queries {
            let mine: Vec<&Value> = pairs.iter().filter(|p| p["query"] == query).collect();
            let texts: Vec<&str> = mine.iter().map(|p| p["passage"].as_str().unwrap()).collect();
            let r = post(&s.router, "/rerank", json!({"query": query, "texts": texts, "raw_scores": true, "model": name})).await;
            for (index, score) in ranking(&r) {
                let golden = mine[index]["score"].as_f64().unwrap();
                assert!((score - golden).abs() <= 1e-4, "{name}: {query:?} / text {index}: {score} vs transformers {golden}");
                longest = longest.max(mine[index]["ids"].as_array().unwrap().len());
                checked += 1;
            }
        }
        assert_eq!(checked, pairs.len());
        assert_eq!(longest, 512, "{name}: the goldens include a pair cut to max_length");
    }
}

#[tokio::test]
async fn one_reranker_served_needs_no_model_and_pairs_batched_with_embeddings_get_their_own_scores() {
    let name = RERANKERS[1];
    let s = start_rerankers(&[name], |c| c.max_batch_tokens = 256);
    let passages: Vec<String> = (0..12).map(|i| format!("passage {i}: {}", "rows and tables and indexes ".repeat(i % 5 + 1))).collect();
    let refs: Vec<&str> = passages.iter().map(String::as_str).collect();
    let expected = engine_logits(name, "how are rows stored?", &refs);
    let vectors = engine_vectors(&refs);
    let mut tasks = Vec::new();
    for i in 0..passages.len() {
        let router = s.router.clone();
        let (p, q) = (passages[i].clone(), passages.clone());
        tasks.push(tokio::spawn(async move {
            let rerank = post(&router, "/rerank", json!({"query": "how are rows stored?", "texts": q, "raw_scores": true})).await;
            let embed = post(&router, "/v1/embeddings", json!({"model": MODEL, "input": p})).await;
            (i, rerank, embed)
        }));
    }
    for task in tasks {
        let (i, rerank, embed) = task.await.unwrap();
        for (index, score) in ranking(&rerank) {
            assert_eq!((score as f32).to_bits(), expected[index].to_bits(), "request {i} text {index}");
        }
        assert_eq!(floats(&embed.body["data"][0]["embedding"]), vectors[i], "request {i}");
    }
    let metrics = send(&s.router, Method::GET, "/metrics", &[], vec![]).await;
    assert!(metrics.body.as_str().unwrap().contains("bge_serve_requests_total{route=\"/rerank\",status=\"200\"} 12"), "{}", metrics.body);
}

#[tokio::test]
async fn rerank_behind_a_full_queue_is_429_overloaded_and_an_oversize_declaration_413() {
    let s = start_rerankers(&RERANKERS[1..], |c| {
        c.max_queue = 1;
        c.max_batch_tokens = 256;
        c.max_body_bytes = 1 << 20;
    });
    let state = s.server.as_ref().unwrap().state.clone();
    // Long pairs keep the engine busy (each is cut to 512 tokens).
    let long = "Tables hold rows and the rows hold text. ".repeat(60);
    let big = json!({"query": "what do tables hold?", "texts": vec![long; 256]});
    let router = s.router.clone();
    let first = tokio::spawn(async move { post(&router, "/rerank", big).await });
    let mut waited = 0;
    while state.batcher.pending() == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
        waited += 1;
        assert!(waited < 4000, "the first request never reached the queue");
    }
    let r = post(&s.router, "/rerank", json!({"query": "q", "texts": ["one more"]})).await;
    assert_tei_error(&r, StatusCode::TOO_MANY_REQUESTS, "Overloaded");
    assert_eq!(r.headers.get(header::RETRY_AFTER).unwrap(), "1");
    let first = first.await.unwrap();
    assert_eq!(ranking(&first).len(), 256);
    // A Content-Length over the limit is refused before the body is read, in TEI's shape.
    let r = send(&s.router, Method::POST, "/rerank", &[("content-length", "10000000")], vec![]).await;
    assert_tei_error(&r, StatusCode::PAYLOAD_TOO_LARGE, "Validation");
    let r = post(&s.router, "/rerank", json!({"query": "q", "texts": ["one more"]})).await;
    assert_eq!(ranking(&r).len(), 1);
}
