//! The ASCII WordPiece fast path (tokenize.rs, AsciiWordPiece) gives token for token what the
//! `tokenizers` crate gives through the model's own tokenizer.json: on random ASCII (control
//! characters, punctuation runs, long and unknown words, "##" in the text), on real passages and
//! queries, with prompts, with and without truncation, and counted as well as encoded.
mod common;

use bge_engine::backend::BackendKind;
use bge_engine::tokenize::windows;
use bge_engine::Model;
use common::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// What the crate gives for `text`: the whole pipeline with its special tokens, no truncation.
fn crate_ids(tok: &tokenizers::Tokenizer, text: &str) -> Vec<u32> {
    tok.encode(text, true).unwrap().get_ids().to_vec()
}

fn crate_tokenizer() -> tokenizers::Tokenizer {
    let mut tok = tokenizers::Tokenizer::from_file(minilm().join("tokenizer.json")).unwrap();
    tok.with_truncation(None).unwrap();
    tok.with_padding(None);
    tok
}

/// Random ASCII: letters mostly, with digits, every punctuation mark, spaces, tabs, newlines,
/// control characters (which the normalizer deletes, joining words), "##", and now and then a
/// word longer than WordPiece's 100-character limit or one made of unlikely letter runs.
fn random_ascii(rng: &mut StdRng) -> String {
    let len = rng.random_range(0..400);
    let mut s = String::new();
    while s.len() < len {
        match rng.random_range(0..100) {
            0..=59 => s.push(rng.random_range(b'a'..=b'z') as char),
            60..=64 => s.push(rng.random_range(b'A'..=b'Z') as char),
            65..=69 => s.push(rng.random_range(b'0'..=b'9') as char),
            70..=79 => s.push(' '),
            80..=84 => s.push(*b"!\"#$%&'()*+,-./:;<=>?@\\]^_`{|}~".get(rng.random_range(0..31)).unwrap() as char),
            85 => s.push_str(["\t", "\n", "\r", "\r\n", "  "][rng.random_range(0..5)]),
            86 => s.push(rng.random_range(0u8..0x20) as char),
            87 => s.push('\x7f'),
            88 => s.push_str("##"),
            89 => s.push_str(&"x".repeat(rng.random_range(95..110))),
            90 => s.push_str(["qzxj", "xkcdwq", "zzzq", "unbelievably", "tokenization"][rng.random_range(0..5)]),
            _ => s.push_str(["the", "embedding", "postgres", "vector", "index", "query"][rng.random_range(0..6)]),
        }
    }
    s
}

#[test]
fn ascii_fast_path_matches_the_tokenizers_crate() {
    let model = Model::load("all-MiniLM-L6-v2", &minilm(), BackendKind::Cpu).unwrap();
    assert!(model.tokenizer.has_ascii_fast_path(), "a BERT WordPiece tokenizer takes the fast path");
    let tok = crate_tokenizer();
    let corpus = std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../benches/rag_corpus.txt")).unwrap();
    let mut rng = StdRng::seed_from_u64(17);
    let random: Vec<String> = (0..2000).map(|_| random_ascii(&mut rng)).collect();
    let fixed = ["", " ", "\t\n", "a", "A.B", "don't", "e-mail", "##ing", "x\x01y", "x\x0by", "x\x0cy", "naïve [MASK]", "[CLS] hi", "日本"];
    let texts = random.iter().map(String::as_str).chain(corpus.lines().take(500)).chain(fixed);
    let mut checked = 0;
    for text in texts {
        let want = crate_ids(&tok, text);
        let got = model.tokenizer.encode(text, false);
        if want.len() > model.tokenizer.max_seq_length() {
            assert!(got.is_err(), "{text:?}: {} tokens should be too long", want.len());
            // Truncated: the first max_seq_length - 1 tokens, then [SEP].
            let got = model.tokenizer.encode(text, true).unwrap().ids;
            assert_eq!(got[..got.len() - 1], want[..got.len() - 1], "{text:?} truncated");
            assert_eq!(got.last(), want.last());
        } else {
            assert_eq!(got.unwrap().ids, want, "{text:?}");
        }
        assert_eq!(model.tokenizer.count(text, false).unwrap(), want.len(), "{text:?} counted");
        assert_eq!(model.tokenizer.count(text, true).unwrap(), want.len().min(model.tokenizer.max_seq_length()), "{text:?} counted, truncated");
        checked += 1;
    }
    assert!(checked > 2500);
}

#[test]
fn ascii_fast_path_keeps_prompts_and_windows() {
    let model = Model::load("all-MiniLM-L6-v2", &minilm(), BackendKind::Cpu).unwrap();
    let tok = crate_tokenizer();
    let mut rng = StdRng::seed_from_u64(23);
    let prompt = "Represent this sentence for searching relevant passages: ";
    for _ in 0..300 {
        let text: String = (0..rng.random_range(1..6)).map(|_| random_ascii(&mut rng)).collect::<Vec<_>>().join(" ");
        let want = crate_ids(&tok, &format!("{prompt}{text}"));
        let got = model.tokenizer.encode_prompted(prompt, &text, true, &mut || {}).unwrap().ids;
        let n = got.len() - 1;
        assert_eq!(got[..n], want[..n], "{text:?}");
        // Windows of 64 bytes: the crate on each piece (the prompt before the first), against
        // the fast path's windowed count.
        let pieces: usize = windows(&text, 64)
            .enumerate()
            .map(|(i, piece)| tok.encode(if i == 0 { format!("{prompt}{piece}") } else { piece.to_string() }, false).unwrap().len())
            .sum();
        assert_eq!(model.tokenizer.count_windowed(prompt, &text, false, 64, &mut || {}).unwrap(), pieces + 2, "{text:?}");
    }
}
