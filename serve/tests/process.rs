//! The built bge-serve binary over real sockets: slow senders time out, clients that hang up
//! mid-body leave nothing behind, non-HTTP junk is shrugged off, and SIGTERM finishes the
//! request in flight before the process exits 0.
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Running {
    child: Child,
    addr: String,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the binary on a free port over engine/tests/models (tiny models only) and waits for
/// its "listening on" line.
fn spawn(extra: &[&str]) -> Running {
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("../engine/tests/models");
    let mut child = Command::new(env!("CARGO_BIN_EXE_bge-serve"))
        .args(["--models", models.to_str().unwrap(), "--listen", "127.0.0.1:0", "--device", "cpu"])
        .args(extra)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("bge-serve starts");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = loop {
        let line = lines.next().expect("bge-serve printed its address").unwrap();
        if let Some(rest) = line.strip_prefix("bge-serve: listening on http://") {
            break rest.split_whitespace().next().unwrap().to_string();
        }
    };
    // Keep draining its log so it never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines.by_ref() {});
    Running { child, addr }
}

/// Sends `raw` and reads the whole answer (the requests say Connection: close).
fn exchange(addr: &str, raw: &[u8]) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    stream.write_all(raw).unwrap();
    read_response(&mut stream)
}

fn read_response(stream: &mut TcpStream) -> (u16, String) {
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

fn post(addr: &str, path: &str, body: &str) -> (u16, String) {
    let raw = format!("POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
    exchange(addr, raw.as_bytes())
}

fn embed_ok(addr: &str) {
    let (status, body) = post(addr, "/v1/embeddings", r#"{"model": "tiny-bge-m3", "input": "still answering"}"#);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"embedding\""), "{body}");
}

#[test]
fn slow_senders_time_out_and_others_are_served_meanwhile() {
    let server = spawn(&["--request-timeout", "2"]);
    let mut slow = TcpStream::connect(&server.addr).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    slow.write_all(b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\nConnection: close\r\n\r\n{\"model\": ").unwrap();
    let started = Instant::now();
    embed_ok(&server.addr);
    let (status, _) = read_response(&mut slow);
    assert_eq!(status, 408, "a body that never completes ends in 408");
    assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
    // Headers that never complete: the connection is closed after the header timeout.
    let mut slower = TcpStream::connect(&server.addr).unwrap();
    slower.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    slower.write_all(b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Le").unwrap();
    let started = Instant::now();
    let mut rest = Vec::new();
    let closed = slower.read_to_end(&mut rest);
    assert!(closed.is_ok() || started.elapsed() < Duration::from_secs(10), "{closed:?}");
    assert!(started.elapsed() < Duration::from_secs(10), "the connection stayed open {:?}", started.elapsed());
    embed_ok(&server.addr);
    let (_, metrics) = exchange(&server.addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert!(metrics.contains("bge_serve_requests_total{route=\"/v1/embeddings\",status=\"408\"} 1"), "{metrics}");
}

#[test]
fn clients_that_hang_up_mid_body_and_junk_connections_leave_the_server_serving() {
    let server = spawn(&[]);
    for i in 0..50 {
        let mut s = TcpStream::connect(&server.addr).unwrap();
        if i % 2 == 0 {
            let _ = s.write_all(b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n{\"model\": \"tiny-bge-m3\", \"input\": [\"abc");
        } else {
            let _ = s.write_all(&[0u8, 255, 13, 10, 13, 10, 1, 2, 3]);
        }
        let _ = s.shutdown(Shutdown::Both);
    }
    // A declared 100 MB body is refused from its Content-Length, before any of it is sent.
    let mut huge = TcpStream::connect(&server.addr).unwrap();
    huge.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    huge.write_all(b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Length: 104857600\r\n\r\n{").unwrap();
    let mut answer = [0u8; 512];
    let n = huge.read(&mut answer).unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 413") && answer.contains("invalid_request_error"), "{answer}");
    // Junk that is HTTP but not a request the server knows.
    let (status, _) = exchange(&server.addr, b"GARBAGE / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert!((400..500).contains(&status), "status {status}");
    embed_ok(&server.addr);
}

#[test]
fn sigterm_finishes_the_request_in_flight_then_exits_0() {
    let mut server = spawn(&["--max-batch-tokens", "256"]);
    let addr = server.addr.clone();
    let long = "Tables hold rows and the rows hold text. ".repeat(40);
    let texts: Vec<String> = (0..300).map(|i| format!("{i} {long}")).collect();
    let body = serde_json::json!({"model": "tiny-bge-m3", "input": texts}).to_string();
    let in_flight = std::thread::spawn(move || post(&addr, "/v1/embeddings", &body));
    // Wait until the request is queued or computing.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, metrics) = exchange(&server.addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        if metrics.lines().any(|l| l.starts_with("bge_serve_requests_pending ") && !l.ends_with(" 0")) {
            break;
        }
        assert!(Instant::now() < deadline, "the request never reached the engine");
        std::thread::sleep(Duration::from_millis(5));
    }
    let pid = server.child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let (status, body) = in_flight.join().unwrap();
    assert_eq!(status, 200, "the request in flight at SIGTERM completes");
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["data"].as_array().unwrap().len(), 300);
    let deadline = Instant::now() + Duration::from_secs(30);
    let exit = loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "bge-serve did not exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(exit.success(), "exit status {exit}");
    assert!(TcpStream::connect(&server.addr).is_err(), "nothing listens after shutdown");
}
