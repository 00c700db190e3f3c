//! The chunker (`TextTokenizer::chunk`) on the three tokenizer families: WordPiece
//! (all-MiniLM-L6-v2), Unigram with Metaspace (tiny BGE-M3), byte-fallback BPE without a
//! pre-tokenizer (tiny Qwen3) and a byte-level BPE (a copy of tiny Qwen3 with the tokenizer
//! scripts/goldens/make_chunk_fixtures.py trained). Every chunk's count is checked by
//! re-tokenising its text alone, the counts themselves against Hugging Face's tokenizers
//! (engine/tests/goldens/chunk_counts.json), and every property of the contract on random
//! multilingual and real texts.
mod common;

use std::path::{Path, PathBuf};

use bge_engine::chunk::{is_ideograph_break, Chunk};
use bge_engine::error::ErrorKind;
use bge_engine::{Error, Frontend, Result, TextRole};
use common::*;

fn goldens_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/goldens")
}

/// tiny-qwen3 with the byte-level BPE of the fixtures (other files linked), made once per test
/// process: the tests run in parallel and would otherwise remake it under each other.
fn bytelevel_dir() -> PathBuf {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/models/tiny-qwen3");
        let dest = temp_dir("chunk-bytelevel").join("tiny-qwen3-bytelevel");
        std::fs::create_dir_all(&dest).unwrap();
        for entry in std::fs::read_dir(&src).unwrap() {
            let entry = entry.unwrap();
            if entry.file_name() != "tokenizer.json" {
                std::os::unix::fs::symlink(entry.path(), dest.join(entry.file_name())).unwrap();
            }
        }
        std::fs::copy(goldens_dir().join("chunk_bytelevel_tokenizer.json"), dest.join("tokenizer.json")).unwrap();
        dest
    })
    .clone()
}

fn frontends() -> Vec<(&'static str, Frontend)> {
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/models");
    vec![
        ("all-MiniLM-L6-v2", Frontend::load("all-MiniLM-L6-v2", &minilm()).unwrap()),
        ("tiny-bge-m3", Frontend::load("tiny-bge-m3", &tiny_m3()).unwrap()),
        ("tiny-qwen3", Frontend::load("tiny-qwen3", &models.join("tiny-qwen3")).unwrap()),
        ("tiny-qwen3-bytelevel", Frontend::load("tiny-qwen3-bytelevel", &bytelevel_dir()).unwrap()),
    ]
}

/// xorshift64*: deterministic and dependency-free.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi - lo + 1)
    }
    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }
}

const WORDS: &[&str] = &[
    "the", "of", "and", "retrieval", "embedding", "vectors", "database", "chunk", "token", "paragraph", "model", "Paris",
    "capital", "France", "Crème", "brûlée", "façade", "naïve", "café", "Straße", "Ångström", "e\u{301}", "ﬁne", "x²",
    "Ελληνικά", "γρήγορη", "αλεπού", "Русский", "быстрая", "коричневая", "лиса", "العربية", "القاهرة", "עברית", "हिन्दी",
    "दिल्ली", "서울은", "대한민국의", "수도입니다", "🚀", "🔥", "👩\u{200d}👩\u{200d}👧\u{200d}👦", "🇫🇷🇯🇵", "❤️", "don't",
    "https://example.com/path?q=1&lang=en", "3.14159", "[CLS]", "[SEP]", "<s>", "</s>", "<bos>", "<eos>", "zero\u{200b}width",
    "control\u{1}char", "soft\u{ad}hyphen", "(parenthesis)", "\"quoted.\"", "end.", "why?", "yes!", "list:", "a,b,c",
];
const CJK: &str = "北京是中华人民共和国的首都。東京は日本の首都です。ひらがなとカタカナ！本当ですか？我们今天讨论向量数据库和文本切分的问题，以及如何在不截断的情况下嵌入长文档";
const SEPARATORS: &[&str] = &[
    " ", " ", " ", " ", " ", " ", " ", " ", " ", " ", "  ", "\n", "\n\n", "\n \n\n", "\n\n\n\n\n\n", "\t", "\r\n", "\r\n\r\n",
    "\u{3000}", "\u{a0}", ". ", "! ", "? ", "。", ".\n\n",
];

fn cjk_run(rng: &mut Rng, len: usize) -> String {
    let chars: Vec<char> = CJK.chars().collect();
    let start = rng.below(chars.len());
    chars.iter().cycle().skip(start).take(len).collect()
}

/// A text of `words` pieces: words of many scripts, CJK runs without spaces, now and then a
/// word longer than any chunk, separated by spaces, blank lines, sentence ends and odd spaces.
fn random_text(rng: &mut Rng, words: usize) -> String {
    let mut s = String::new();
    for _ in 0..words {
        match rng.below(100) {
            0..=7 => {
                let len = rng.range(1, 60);
                s.push_str(&cjk_run(rng, len));
            }
            8 => {
                let word = rng.pick(WORDS);
                s.push_str(&word.repeat(rng.range(10, 400)));
            }
            9 => {
                let len = rng.range(100, 1500);
                s.push_str(&cjk_run(rng, len));
            }
            _ => s.push_str(rng.pick(WORDS)),
        }
        s.push_str(rng.pick(SEPARATORS));
    }
    s
}

fn corpus() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../benches/rag_corpus.txt")).unwrap()
}

/// Paragraphs of the RAG corpus, `bytes` long or so, from a line start.
fn corpus_piece(rng: &mut Rng, corpus: &str, bytes: usize) -> String {
    let lines: Vec<&str> = corpus.lines().collect();
    let mut s = String::new();
    let mut i = rng.below(lines.len());
    while s.len() < bytes {
        s.push_str(lines[i % lines.len()]);
        s.push_str(if rng.below(3) == 0 { "\n\n" } else { "\n" });
        i += 1;
    }
    s
}

fn chunk(fe: &Frontend, text: &str, max_tokens: usize, overlap: usize) -> Result<Vec<Chunk>> {
    fe.tokenizer.chunk(text, max_tokens, overlap, &mut || Ok(()))
}

/// bge_token_count(text, model): the named-model form, which truncates.
fn sql_count(fe: &Frontend, text: &str) -> usize {
    fe.count_tokens(text, TextRole::Passage, true, &mut || {}).unwrap()
}

fn full_count(fe: &Frontend, text: &str) -> usize {
    fe.count_tokens(text, TextRole::Passage, false, &mut || {}).unwrap()
}

fn is_cjk_sentence_end(c: char) -> bool {
    matches!(c, '。' | '！' | '？')
}

/// How well the chunks filled up, for the greedy check's report.
#[derive(Default, Debug)]
struct Fill {
    chunks: usize,
    small: usize,
}

/// Every property of the contract for `chunks` of `text`.
fn check_contract(name: &str, fe: &Frontend, text: &str, max_tokens: usize, overlap: usize, chunks: &[Chunk], fill: &mut Fill) {
    let chars: Vec<char> = text.chars().collect();
    let at = |a: usize, b: usize| chars[a..b].iter().collect::<String>();
    let added = fe.tokenizer.min_chunk_tokens() - 1;
    let budget = max_tokens - added;
    let what = || {
        let head: String = chars.iter().take(80).collect();
        format!("{name}, max_tokens {max_tokens}, overlap {overlap}, {} chars: {head:?}", chars.len())
    };
    assert_eq!(chunks.is_empty(), text.trim().is_empty(), "{}", what());
    let mut covered = vec![false; chars.len()];
    for (i, c) in chunks.iter().enumerate() {
        assert!(c.start_char < c.end_char && c.end_char <= chars.len(), "chunk {i} {c:?}: {}", what());
        let s = at(c.start_char, c.end_char);
        assert!(!s.trim().is_empty() && s.trim() == s, "chunk {i} {s:?} not trimmed or empty: {}", what());
        assert_eq!(c.tokens, sql_count(fe, &s), "chunk {i} {s:?}: {}", what());
        assert!(c.tokens <= max_tokens, "chunk {i} has {} tokens: {}", c.tokens, what());
        covered[c.start_char..c.end_char].iter_mut().for_each(|x| *x = true);
        // A cut inside a word only where the word alone is longer than a chunk.
        if c.end_char < chars.len() && !chars[c.end_char].is_whitespace() && !is_cjk_sentence_end(chars[c.end_char - 1]) {
            let ws = chars[..c.end_char].iter().rposition(|ch| ch.is_whitespace()).map_or(0, |p| p + 1);
            let we = chars[c.end_char..].iter().position(|ch| ch.is_whitespace()).map_or(chars.len(), |p| c.end_char + p);
            let word = at(ws, we);
            assert!(full_count(fe, &word) > max_tokens, "chunk {i} {s:?} ends inside the word {word:?}, which fits: {}", what());
        }
        if i > 0 {
            let p = chunks[i - 1];
            assert!(c.start_char > p.start_char && c.end_char > p.end_char, "chunks {p:?} {c:?} out of order: {}", what());
            if c.start_char < p.end_char {
                let shared = at(c.start_char, p.end_char);
                assert!(overlap > 0, "chunks {p:?} {c:?} share {shared:?} without overlap: {}", what());
                assert!(full_count(fe, &shared) - added <= overlap, "overlap {shared:?} too long: {}", what());
                let (before, first) = (chars[c.start_char - 1], chars[c.start_char]);
                assert!(before.is_whitespace() || is_ideograph_break(before, first), "overlap {shared:?} starts inside a word: {}", what());
            }
        }
        // Greedy: a chunk under 40% full only where the next word would not have fitted (the
        // chunker aims at half full, by the estimate of a window's tokens).
        if i + 1 < chunks.len() {
            fill.chunks += 1;
            if (c.tokens - added) * 5 + 4 < budget * 2 {
                fill.small += 1;
                // The next word, or the next character where the chunk ended inside a run.
                let from = c.end_char + chars[c.end_char..].iter().take_while(|ch| ch.is_whitespace()).count();
                let word_end = chars[from..].iter().position(|ch| ch.is_whitespace()).map_or(chars.len(), |p| from + p);
                let word_end = if from == c.end_char { from + 1 } else { word_end };
                let longer = at(c.start_char, word_end);
                assert!(full_count(fe, &longer) > max_tokens, "chunk {i} {s:?} ({} tokens) could have taken {longer:?}: {}", c.tokens, what());
            }
        }
    }
    for (i, ch) in chars.iter().enumerate() {
        assert!(ch.is_whitespace() || covered[i], "character {i} {ch:?} in no chunk: {}", what());
    }
}

#[test]
fn counts_match_hugging_face_tokenizers() {
    #[derive(serde::Deserialize)]
    struct Fixture {
        texts: Vec<String>,
        counts: std::collections::HashMap<String, Vec<usize>>,
    }
    let f: Fixture = serde_json::from_str(&std::fs::read_to_string(goldens_dir().join("chunk_counts.json")).unwrap()).unwrap();
    for (name, fe) in frontends() {
        let want = &f.counts[name];
        assert_eq!(want.len(), f.texts.len());
        for (text, &n) in f.texts.iter().zip(want) {
            assert_eq!(full_count(&fe, text), n, "{name}: {text:?}");
            assert_eq!(fe.tokenizer.count(text, false).unwrap(), n, "{name}: {text:?}");
        }
        // And each fixture text chunked: its chunks' counts are the same counting.
        let mut fill = Fill::default();
        for text in &f.texts {
            let max = fe.tokenizer.min_chunk_tokens() + 30;
            let chunks = chunk(&fe, text, max, 0).unwrap();
            check_contract(name, &fe, text, max, 0, &chunks, &mut fill);
        }
    }
}

#[test]
fn token_offsets_are_the_crates() {
    // The chunker reads token offsets through the ASCII fast path where it applies.
    let mut rng = Rng(21);
    let corpus = corpus();
    for (name, fe) in frontends() {
        let dir = if name == "all-MiniLM-L6-v2" { minilm() } else if name == "tiny-bge-m3" { tiny_m3() } else { continue };
        let mut crate_tok = tokenizers::Tokenizer::from_file(dir.join("tokenizer.json")).unwrap();
        crate_tok.with_truncation(None).unwrap();
        crate_tok.with_padding(None);
        let alphabet: Vec<char> = "aaaaeeeiioouu tnsrhld  XYZ\t\n\r.,;!?#'()-_0123456789".chars().collect();
        let mut texts: Vec<String> = (0..2000)
            .map(|_| {
                let len = rng.below(200);
                let mut t: String = (0..len).map(|_| rng.pick(&alphabet)).collect();
                if rng.below(10) == 0 {
                    t.push_str(&"ab".repeat(rng.range(40, 80)));
                }
                t
            })
            .collect();
        texts.extend(corpus.lines().take(300).map(String::from));
        texts.push("\u{1}joined\u{7}words é [CLS]".into());
        for text in &texts {
            let want = crate_tok.encode(text.as_str(), false).unwrap().get_offsets().to_vec();
            assert_eq!(fe.tokenizer.token_offsets(text).unwrap(), want, "{name}: {text:?}");
        }
    }
}

#[test]
fn random_multilingual_texts() {
    let mut rng = Rng(0x5eed_c0de);
    for (name, fe) in frontends() {
        let mut fill = Fill::default();
        let (min, max) = (fe.tokenizer.min_chunk_tokens(), fe.tokenizer.max_seq_length().min(400));
        for round in 0..60 {
            let words = rng.range(0, 400);
            let text = random_text(&mut rng, words);
            // Small budgets cannot hold a character of many tokens (an emoji in byte tokens).
            let max_tokens = rng.range(min.max(12), max);
            let overlap = if round % 3 == 0 { 0 } else { rng.below(max_tokens) };
            let chunks = chunk(&fe, &text, max_tokens, overlap).unwrap();
            check_contract(name, &fe, &text, max_tokens, overlap, &chunks, &mut fill);
        }
        eprintln!("{name}: {fill:?}");
    }
}

#[test]
fn real_texts_at_the_models_limits() {
    let corpus = corpus();
    let mut rng = Rng(7);
    for (name, fe) in frontends() {
        let mut fill = Fill::default();
        let limit = fe.tokenizer.max_seq_length().min(1024);
        for (max_tokens, overlap) in [(limit, 0), (limit, limit / 8), (fe.tokenizer.min_chunk_tokens() + 20, 5), (64.min(limit), 0), (100.min(limit), 30)] {
            let text = corpus_piece(&mut rng, &corpus, 20_000);
            let chunks = chunk(&fe, &text, max_tokens, overlap).unwrap();
            check_contract(name, &fe, &text, max_tokens, overlap, &chunks, &mut fill);
            // Prose at a sentence or paragraph end, or a space; full enough to be worth it.
            let mean = chunks.iter().map(|c| c.tokens).sum::<usize>() as f64 / chunks.len() as f64;
            assert!(chunks.len() < 3 || mean > 0.6 * max_tokens as f64, "{name} {max_tokens}: mean {mean}");
        }
        for text in goldens().texts {
            let chunks = chunk(&fe, &text, fe.tokenizer.min_chunk_tokens() + 3, 1).unwrap();
            check_contract(name, &fe, &text, fe.tokenizer.min_chunk_tokens() + 3, 1, &chunks, &mut fill);
        }
        eprintln!("{name}: {fill:?}");
    }
}

#[test]
fn boundaries_prefer_paragraphs_then_sentences() {
    let fe = Frontend::load("all-MiniLM-L6-v2", &minilm()).unwrap();
    let sentence = "This sentence has exactly some words in it.";
    let para = [sentence; 4].join(" ");
    let text = [para.as_str(); 6].join("\n\n");
    let per_para = full_count(&fe, &para) - 2;
    // Room for one and a half paragraphs: each chunk is one paragraph.
    let chunks = chunk(&fe, &text, per_para * 3 / 2 + 2, 0).unwrap();
    let chars: Vec<char> = text.chars().collect();
    for c in &chunks {
        assert_eq!(chars[c.start_char..c.end_char].iter().collect::<String>(), para);
    }
    // Room for two and a half sentences: chunks end at sentence ends.
    let per_sentence = full_count(&fe, sentence) - 2;
    let chunks = chunk(&fe, &text, per_sentence * 5 / 2 + 2, 0).unwrap();
    for c in &chunks {
        assert_eq!(chars[c.end_char - 1], '.', "{c:?}");
    }
    // Words only: chunks end at spaces and are nearly full.
    let words = "alpha beta gamma delta ".repeat(300);
    let chunks = chunk(&fe, &words, 50, 0).unwrap();
    check_contract("words", &fe, &words, 50, 0, &chunks, &mut Fill::default());
    assert!(chunks[..chunks.len() - 1].iter().all(|c| c.tokens >= 49), "{chunks:?}");
}

#[test]
fn text_without_spaces_and_long_words() {
    let unpunctuated: String = CJK.chars().filter(|c| !matches!(c, '。' | '！' | '？' | '，')).collect();
    for (name, fe) in frontends() {
        let max_tokens = 40.min(fe.tokenizer.max_seq_length());
        let texts = [CJK.repeat(40), unpunctuated.repeat(40), "a".repeat(12_000), "Supercalifragilistic".repeat(500), format!("short {} tail", "é".repeat(3000))];
        for text in texts {
            let chunks = chunk(&fe, &text, max_tokens, 8).unwrap();
            check_contract(name, &fe, &text, max_tokens, 8, &chunks, &mut Fill::default());
            // (WordPiece reads a word of over 100 characters as one unknown token.)
            assert!(chunks.len() > 3 || full_count(&fe, &text) <= max_tokens, "{name}");
            // At a CJK sentence end, else at a token boundary with the chunk close to full.
            let chars: Vec<char> = text.chars().collect();
            for c in &chunks[..chunks.len() - 1] {
                let s: String = chars[c.start_char..c.end_char].iter().collect();
                assert!(c.tokens + 4 >= max_tokens || is_cjk_sentence_end(chars[c.end_char - 1]), "{name}: {c:?} {s:?}");
            }
        }
    }
}

#[test]
fn a_huge_word_is_read_in_bounded_windows() {
    // One "word" of 3 MB: WordPiece reads each window of it as one unknown token.
    let fe = Frontend::load("all-MiniLM-L6-v2", &minilm()).unwrap();
    let text = format!("start {} end", "abc".repeat(1 << 20));
    let chunks = chunk(&fe, &text, 100, 10).unwrap();
    let chars: Vec<char> = text.chars().collect();
    let mut next = 0;
    for c in &chunks {
        let s: String = chars[c.start_char..c.end_char].iter().collect();
        assert!(chars[next.min(c.start_char)..c.start_char].iter().all(|ch| ch.is_whitespace()), "{c:?} after {next}");
        assert!(c.tokens <= 100 && c.tokens == sql_count(&fe, &s), "{c:?}: {}", sql_count(&fe, &s));
        next = c.end_char;
    }
    assert_eq!(next, chars.len());
    assert!(chunks.len() < 1000, "{}", chunks.len());
}

#[test]
fn empty_and_whitespace_texts_give_no_chunks() {
    for (_, fe) in frontends() {
        for text in ["", " ", "\n\n\n", "\t \u{3000}\u{a0}\r\n", &"\n".repeat(10_000)] {
            assert!(chunk(&fe, text, fe.tokenizer.min_chunk_tokens(), 0).unwrap().is_empty());
        }
        let c = chunk(&fe, "\n\n  x \n\n", fe.tokenizer.min_chunk_tokens() + 8, 0).unwrap();
        assert_eq!(c, vec![Chunk { start_char: 4, end_char: 5, start_byte: 4, end_byte: 5, tokens: full_count(&fe, "x") }]);
    }
}

#[test]
fn whitespace_heavy_texts() {
    // Words between runs of blank lines, spaces and tabs up to thousands long.
    let mut rng = Rng(99);
    for (name, fe) in frontends() {
        let mut fill = Fill::default();
        for _ in 0..6 {
            let mut text = " \n".repeat(rng.below(500));
            for _ in 0..rng.range(50, 300) {
                text.push_str(rng.pick(WORDS));
                let run = rng.pick(&["\n", " ", "\t", "\r\n", " \n \n"]);
                let longest = if rng.below(4) == 0 { 3000 } else { 3 };
                text.push_str(&run.repeat(rng.range(1, longest)));
            }
            let max_tokens = rng.range(16, 64.min(fe.tokenizer.max_seq_length()));
            let overlap = rng.below(max_tokens / 2);
            let chunks = chunk(&fe, &text, max_tokens, overlap).unwrap();
            check_contract(name, &fe, &text, max_tokens, overlap, &chunks, &mut fill);
        }
        eprintln!("{name}: {fill:?}");
    }
}

#[test]
fn overlap_repeats_the_end_of_the_previous_chunk() {
    let corpus = corpus();
    let text = corpus_piece(&mut Rng(5), &corpus, 30_000);
    for (name, fe) in frontends() {
        let max_tokens = 80.min(fe.tokenizer.max_seq_length());
        let overlap = 20;
        let chunks = chunk(&fe, &text, max_tokens, overlap).unwrap();
        check_contract(name, &fe, &text, max_tokens, overlap, &chunks, &mut Fill::default());
        // Prose has a word start within the last 20 tokens of nearly every chunk, and the
        // overlap takes as many words as fit.
        let chars: Vec<char> = text.chars().collect();
        let pairs: Vec<_> = chunks.windows(2).filter(|w| w[1].start_char < w[0].end_char).collect();
        assert!(pairs.len() * 10 >= (chunks.len() - 1) * 9, "{name}: {} of {} chunks overlap", pairs.len(), chunks.len());
        let added = fe.tokenizer.min_chunk_tokens() - 1;
        let mean = pairs.iter().map(|w| full_count(&fe, &chars[w[1].start_char..w[0].end_char].iter().collect::<String>()) - added).sum::<usize>() as f64 / pairs.len() as f64;
        assert!(mean > 0.6 * overlap as f64, "{name}: mean overlap {mean} tokens");
        // Without overlap the same text gives chunks that share nothing.
        let plain = chunk(&fe, &text, max_tokens, 0).unwrap();
        assert!(plain.windows(2).all(|w| w[1].start_char >= w[0].end_char));
        assert!(plain.len() < chunks.len());
    }
}

#[test]
fn overlap_in_text_without_spaces() {
    // Chinese and Japanese: the overlap starts between two ideographs.
    let text = CJK.repeat(30);
    for (name, fe) in frontends() {
        let (max_tokens, overlap) = (40.min(fe.tokenizer.max_seq_length()), 10);
        let chunks = chunk(&fe, &text, max_tokens, overlap).unwrap();
        check_contract(name, &fe, &text, max_tokens, overlap, &chunks, &mut Fill::default());
        let pairs = chunks.windows(2).filter(|w| w[1].start_char < w[0].end_char).count();
        assert!(pairs * 10 >= (chunks.len() - 1) * 9, "{name}: {pairs} of {} chunks overlap", chunks.len());
    }
}

#[test]
fn prompted_chunks_count_the_prompt() {
    let fe = Frontend::load("all-MiniLM-L6-v2", &minilm()).unwrap();
    let text = corpus_piece(&mut Rng(8), &corpus(), 10_000);
    let prompt = "Represent this passage for retrieval: ";
    let prompt_tokens = fe.tokenizer.count(prompt, false).unwrap() - 2;
    let chunks = fe.tokenizer.chunk_prompted(prompt, &text, 64, 8, &mut || Ok(())).unwrap();
    let chars: Vec<char> = text.chars().collect();
    for c in &chunks {
        let s: String = chars[c.start_char..c.end_char].iter().collect();
        assert_eq!(c.tokens, fe.tokenizer.count_prompted(prompt, &s, false, &mut || {}).unwrap());
        assert!(c.tokens <= 64);
    }
    let e = fe.tokenizer.chunk_prompted(prompt, &text, prompt_tokens + 2, 0, &mut || Ok(())).unwrap_err();
    assert!(e.to_string().starts_with(&format!("max_tokens must be between {} and 256", prompt_tokens + 3)), "{e}");
}

#[test]
fn smallest_budget_makes_one_token_chunks() {
    for (name, fe) in frontends() {
        let min = fe.tokenizer.min_chunk_tokens();
        let text = "The capital of France is Paris. Crème brûlée!";
        // Either chunks of one token or so, or (XLM-R's "▁" before a word's first letter, byte
        // fallback) the error that names a character too long on its own.
        match chunk(&fe, text, min, 0) {
            Ok(chunks) => check_contract(name, &fe, text, min, 0, &chunks, &mut Fill::default()),
            Err(e) => {
                let message = e.to_string();
                let at: usize = message.split("the character at position ").nth(1).unwrap().split(' ').next().unwrap().parse().unwrap();
                // 1-based.
                let ch = text.chars().nth(at - 1).unwrap().to_string();
                assert!(full_count(&fe, &ch) > min, "{name}: {message}");
            }
        }
        let chunks = chunk(&fe, text, min + 8, 0).unwrap();
        check_contract(name, &fe, text, min + 8, 0, &chunks, &mut Fill::default());
    }
}

#[test]
fn bad_arguments_are_invalid_parameters() {
    for (name, fe) in frontends() {
        let tok = &fe.tokenizer;
        let (min, max) = (tok.min_chunk_tokens(), tok.max_seq_length());
        let message = format!("max_tokens must be between {min} and {max} for model \"{name}\"");
        for bad in [0, min - 1, max + 1] {
            let e = chunk(&fe, "some text", bad, 0).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidParameter);
            assert!(e.to_string().starts_with(&message), "{e}");
        }
        for (max_tokens, overlap) in [(min, min), (max, max), (50.min(max), 60)] {
            let e = chunk(&fe, "some text", max_tokens, overlap).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidParameter);
            assert_eq!(e.to_string(), format!("overlap must be less than max_tokens ({max_tokens}), not {overlap}"));
        }
        assert!(chunk(&fe, "some text", max, max - 1).is_ok());
    }
    // A character that alone takes more tokens than allowed (an emoji as four byte tokens).
    let fe = Frontend::load("tiny-qwen3", &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/models/tiny-qwen3")).unwrap();
    assert!(full_count(&fe, "🦀") > fe.tokenizer.min_chunk_tokens() + 1);
    let e = chunk(&fe, "ok 🦀", fe.tokenizer.min_chunk_tokens() + 1, 0).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidParameter);
    assert!(e.to_string().contains("the character at position 4"), "{e}");
}

#[test]
fn check_runs_and_cancels() {
    let fe = Frontend::load("all-MiniLM-L6-v2", &minilm()).unwrap();
    let text = corpus_piece(&mut Rng(3), &corpus(), 100_000);
    let mut calls = 0;
    let chunks = fe.tokenizer.chunk(&text, 128, 16, &mut || {
        calls += 1;
        Ok(())
    });
    assert!(calls > chunks.unwrap().len());
    let mut calls = 0;
    let e = fe
        .tokenizer
        .chunk(&text, 128, 16, &mut || {
            calls += 1;
            if calls == 10 {
                Err(Error::InvalidArgument("canceling statement due to user request".into()))
            } else {
                Ok(())
            }
        })
        .unwrap_err();
    assert_eq!(e.to_string(), "canceling statement due to user request");
    assert_eq!(calls, 10);
}

/// Chunking a 1 MB text against tokenising it once (release mode, prints, asserts nothing):
/// cargo test --release -p bge-engine --test chunk -- --ignored --nocapture
#[test]
#[ignore]
fn cost_of_chunking_a_megabyte() {
    let corpus = corpus();
    let english = corpus.repeat(1 + (1 << 20) / corpus.len());
    let mut rng = Rng(11);
    let mut mixed = String::new();
    while mixed.len() < 1 << 20 {
        mixed.push_str(&random_text(&mut rng, 200));
    }
    // ASCII without '[' takes the fast path of WordPiece tokenizers.
    let ascii: String = english.chars().map(|c| if c.is_ascii() && c != '[' { c } else { ' ' }).collect();
    for (name, fe) in frontends() {
        for (kind, text) in [("english", &english), ("ascii", &ascii), ("multilingual", &mixed)] {
            let t = std::time::Instant::now();
            let total = full_count(&fe, text);
            let once = t.elapsed();
            let max_tokens = fe.tokenizer.max_seq_length().min(512);
            for overlap in [0, max_tokens / 8] {
                let t = std::time::Instant::now();
                let chunks = chunk(&fe, text, max_tokens, overlap).unwrap();
                let took = t.elapsed();
                eprintln!(
                    "{name} {kind} {} bytes, {total} tokens: count {once:?}; chunk max {max_tokens} overlap {overlap}: {took:?} ({:.1}x), {} chunks",
                    text.len(),
                    took.as_secs_f64() / once.as_secs_f64(),
                    chunks.len()
                );
            }
        }
    }
}
