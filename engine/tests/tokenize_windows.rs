//! Long texts are tokenised in windows (bounded memory, interruptible): the windows' tokens must
//! be the whole text's tokens, for the BERT WordPiece and XLM-R Unigram tokenizers, with and
//! without truncation, prompts included; and a huge text costs one window, not its size.
mod common;

use bge_engine::backend::BackendKind;
use bge_engine::tokenize::windows;
use bge_engine::{Error, Model, TextRole};
use common::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Texts of real words (under 20 bytes, so every half window holds a word's end) from the goldens joined by assorted separators (single spaces mostly,
/// some double spaces, newlines, tabs), 200..6000 bytes long.
fn random_texts(seed: u64, n: usize) -> Vec<String> {
    let g = goldens();
    let words: Vec<&str> = g.texts.iter().flat_map(|t| t.split_whitespace()).filter(|w| w.len() < 20).collect();
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            let target = rng.random_range(200..6000);
            let mut s = String::new();
            while s.len() < target {
                s.push_str(words[rng.random_range(0..words.len())]);
                s.push_str(match rng.random_range(0..20) {
                    0 => "  ",
                    1 => "\n",
                    2 => " \t ",
                    _ => " ",
                });
            }
            s
        })
        .collect()
}

#[test]
fn windows_cover_the_text_and_respect_the_size() {
    for text in random_texts(1, 20).iter().map(String::as_str).chain(["", "x", "ü", "日本語のテキスト", &"é".repeat(5000)]) {
        for window in [8, 33, 64, 257, 100_000] {
            let pieces: Vec<&str> = windows(text, window).collect();
            assert_eq!(pieces.concat(), text);
            assert!(pieces.iter().all(|p| p.len() <= window.max(8)), "window {window}");
            assert!(!pieces.is_empty());
        }
    }
}

#[test]
fn windowed_tokens_equal_whole_text_tokens() {
    let dir = temp_dir("windows");
    let models = [
        Model::load("all-MiniLM-L6-v2", &minilm(), BackendKind::Cpu).unwrap(),
        Model::load("all-MiniLM-L6-v2-cls512", &cls512_variant(&minilm(), &dir), BackendKind::Cpu).unwrap(),
        Model::load("tiny-bge-m3", &tiny_m3(), BackendKind::Cpu).unwrap(),
    ];
    let mut texts = random_texts(2, 40);
    texts.extend(goldens().texts);
    for model in &models {
        let tok = &model.tokenizer;
        for role in [TextRole::Passage, TextRole::Query] {
            let prompt = model.prompt(role).unwrap_or("");
            for text in &texts {
                let whole = usize::MAX / 2;
                for truncate in [true, false] {
                    let want = tok.encode_windowed(prompt, text, truncate, whole, &mut || {});
                    let want_count = tok.count_windowed(prompt, text, truncate, whole, &mut || {}).unwrap();
                    // Windows that fit two of the text's longest word (the exactness condition).
                    let longest = text.split_ascii_whitespace().map(str::len).max().unwrap_or(0) + prompt.len();
                    for window in [64, 301, 1024, 4096].into_iter().filter(|w| *w > 2 * longest) {
                        let got = tok.encode_windowed(prompt, text, truncate, window, &mut || {});
                        match (&want, &got) {
                            (Ok(a), Ok(b)) => assert_eq!(a, b, "{} window {window} truncate {truncate}: {text:?}", model.spec.name),
                            (Err(Error::InputTooLong { tokens: a, .. }), Err(Error::InputTooLong { tokens: b, .. })) => {
                                assert_eq!(a, b, "{} {role:?} window {window}", model.spec.name)
                            }
                            other => panic!("{} window {window}: {other:?}", model.spec.name),
                        }
                        let c = tok.count_windowed(prompt, text, truncate, window, &mut || {}).unwrap();
                        assert_eq!(c, want_count, "{} {role:?} window {window} truncate {truncate}", model.spec.name);
                    }
                }
            }
        }
    }
}

#[test]
fn huge_texts_read_only_what_they_need_and_can_be_interrupted() {
    let model = Model::load("all-MiniLM-L6-v2", &minilm(), BackendKind::Cpu).unwrap();
    let tok = &model.tokenizer;
    // 20 MB: truncated, only the first window is tokenised (one interrupt check: none here).
    let huge = "word ".repeat(4_000_000);
    let mut calls = 0;
    assert_eq!(tok.count_prompted("", &huge, true, &mut || calls += 1).unwrap(), 256);
    assert_eq!(calls, 0, "a truncated count reads one window");
    assert_eq!(tok.encode_prompted("", &huge, true, &mut || calls += 1).unwrap().ids.len(), 256);
    assert_eq!(calls, 0);
    // Untruncated: an exact count over every window, interruptible between them.
    let n = tok.count_prompted("", &huge[..2_000_000], false, &mut || calls += 1).unwrap();
    assert_eq!(n, 400_000 + 2);
    assert!(calls >= 2_000_000 / tok.window_bytes() - 1, "{calls} interrupt checks");
    // An interrupt (PostgreSQL cancel) unwinds out of the tokenizer cleanly.
    let cancelled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _ = tok.count_prompted("", &huge, false, &mut || panic!("cancel"));
    }));
    assert!(cancelled.is_err());
    // One 5 MB "word" with no spaces: [UNK] whole; cut into windows it stays bounded.
    let word = "a".repeat(5_000_000);
    assert_eq!(tok.encode("a".repeat(300).as_str(), true).unwrap().ids, vec![101, 100, 102]);
    assert!(tok.count(&word, false).unwrap() <= 5_000_000 / tok.window_bytes() + 3);
}
