//! Tokenisation with the model's own tokenizer.json (the `tokenizers` crate, the same code
//! sentence-transformers runs through its fast tokenizer).
//!
//! sentence-transformers truncates at max_seq_length (special tokens included) and pads nothing
//! we care about; the tokenizer.json's own truncation/padding settings are ignored, as it does.
use std::collections::HashMap;
use std::path::Path;

use serde::Deserialize;
use tokenizers::models::ModelWrapper;
use tokenizers::normalizers::NormalizerWrapper;
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::{Encoding, Model, PostProcessor, Tokenizer, TruncationDirection};

use crate::config::{ModelKind, ModelSpec};
use crate::error::{invalid_file, Error, Result};

pub struct TextTokenizer {
    pub(crate) model: String,
    /// The model's tokenizer with its own truncation and padding switched off: truncation is
    /// ours ([`TextTokenizer::encode`]).
    full: Tokenizer,
    /// Special tokens its post-processor adds to one sequence ([CLS] … [SEP]: 2).
    pub(crate) added_tokens: usize,
    max_seq_length: usize,
    do_lower_case: bool,
    /// Ids of the cls, eos, pad and unk tokens: the ones BGE-M3's sparse output leaves out.
    special_ids: Vec<u32>,
    /// transformers' clean_up_tokenization_spaces, applied by [`TextTokenizer::token_text`].
    clean_up_spaces: bool,
    /// The same tokens for the commonest inputs, without the crate's per-character bookkeeping.
    ascii: Option<AsciiWordPiece>,
    /// How a (query, passage) pair is joined for a cross-encoder; None when the post-processor
    /// does not wrap a sequence as cls … sep.
    pair: Option<PairLayout>,
}

/// How a cross-encoder's pair is joined, as the BERT and XLM-RoBERTa tokenizers join one for
/// FlagReranker: BERT `[CLS] q [SEP] p [SEP]` with token types 0 then 1, XLM-RoBERTa
/// `<s> q </s></s> p </s>` with types 0 (its model takes no token types).
#[derive(Debug, Clone, Copy)]
struct PairLayout {
    cls: u32,
    sep: u32,
    /// XLM-RoBERTa: two separators between the texts, and no second token type.
    roberta: bool,
}

impl PairLayout {
    fn added_tokens(self) -> usize {
        if self.roberta { 4 } else { 3 }
    }
}

/// The parts of tokenizer_config.json / special_tokens_map.json this crate reads. Special
/// tokens are strings or {"content": …} objects.
#[derive(Deserialize, Default)]
struct SpecialTokens {
    cls_token: Option<TokenName>,
    eos_token: Option<TokenName>,
    pad_token: Option<TokenName>,
    unk_token: Option<TokenName>,
    clean_up_tokenization_spaces: Option<bool>,
}

#[derive(Deserialize, Clone)]
#[serde(untagged)]
enum TokenName {
    Plain(String),
    Added { content: String },
}

impl TokenName {
    fn text(&self) -> &str {
        match self {
            TokenName::Plain(s) | TokenName::Added { content: s } => s,
        }
    }
}

fn read_special_tokens(path: &Path) -> Result<SpecialTokens> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text).map_err(|e| invalid_file(path, e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(SpecialTokens::default()),
        Err(e) => Err(invalid_file(path, e)),
    }
}

/// One tokenised input: ids with special tokens, and their token types.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    pub ids: Vec<u32>,
    pub type_ids: Vec<u32>,
}

impl TextTokenizer {
    pub fn load(spec: &ModelSpec) -> Result<TextTokenizer> {
        let path = spec.dir.join("tokenizer.json");
        Self::from_file(&path, spec)
    }

    fn from_file(path: &Path, spec: &ModelSpec) -> Result<TextTokenizer> {
        if !path.exists() {
            return Err(Error::MissingFile { path: path.to_path_buf() });
        }
        let mut full = Tokenizer::from_file(path).map_err(|e| invalid_file(path, e))?;
        full.with_padding(None);
        full.with_truncation(None).map_err(|e| invalid_file(path, e))?;
        if full.get_vocab_size(true) > spec.vocab_size {
            return Err(invalid_file(
                path,
                format!("vocabulary of {} tokens exceeds the model's vocab_size {}", full.get_vocab_size(true), spec.vocab_size),
            ));
        }
        // Special tokens as transformers resolves them: special_tokens_map.json over
        // tokenizer_config.json, else the tokenizer class's defaults for the model type.
        let map = read_special_tokens(&spec.dir.join("special_tokens_map.json"))?;
        let cfg = read_special_tokens(&spec.dir.join("tokenizer_config.json"))?;
        let defaults: [&str; 4] = match spec.model_type.as_str() {
            "xlm-roberta" => ["<s>", "</s>", "<pad>", "<unk>"],
            _ => ["[CLS]", "", "[PAD]", "[UNK]"],
        };
        let pick = |a: &Option<TokenName>, b: &Option<TokenName>, default: &str| -> Option<u32> {
            let name = a.as_ref().or(b.as_ref()).map(|t| t.text().to_string()).unwrap_or_else(|| default.to_string());
            full.token_to_id(&name)
        };
        let mut special_ids: Vec<u32> = [
            pick(&map.cls_token, &cfg.cls_token, defaults[0]),
            pick(&map.eos_token, &cfg.eos_token, defaults[1]),
            pick(&map.pad_token, &cfg.pad_token, defaults[2]),
            pick(&map.unk_token, &cfg.unk_token, defaults[3]),
        ]
        .into_iter()
        .flatten()
        .collect();
        special_ids.sort_unstable();
        special_ids.dedup();
        // transformers skips the clean-up for BPE vocabularies, whatever the setting says.
        let clean_up_spaces = cfg.clean_up_tokenization_spaces.unwrap_or(false) && !matches!(full.get_model(), ModelWrapper::BPE(_));

        let added_tokens = full.get_post_processor().map_or(0, |p| p.added_tokens(false));
        let ascii = AsciiWordPiece::new(&full, spec.do_lower_case);
        let pair = full.encode("", true).ok().and_then(|e| match e.get_ids() {
            &[cls, sep] => Some(PairLayout { cls, sep, roberta: spec.model_type == "xlm-roberta" }),
            _ => None,
        });
        if pair.is_none() && spec.kind == ModelKind::Reranker {
            return Err(Error::Unsupported {
                model: spec.name.clone(),
                reason: "a reranker whose tokenizer does not wrap a text as cls … sep (its post-processor), so no pair can be built".into(),
            });
        }
        Ok(TextTokenizer {
            model: spec.name.clone(),
            full,
            added_tokens,
            max_seq_length: spec.max_seq_length,
            do_lower_case: spec.do_lower_case,
            special_ids,
            clean_up_spaces,
            ascii,
            pair,
        })
    }

    /// Ids of the cls, eos, pad and unk tokens (sorted): what BGE-M3's sparse weights omit.
    pub fn special_ids(&self) -> &[u32] {
        &self.special_ids
    }

    /// The text of one token as transformers' `tokenizer.decode([id])` gives it (the decoder's
    /// rules, e.g. SentencePiece's "▁" dropped at the start, then transformers' tokenisation
    /// clean-up when tokenizer_config.json asks for it). Distinct ids can share a text ("▁the"
    /// and "the" both give "the").
    pub fn token_text(&self, id: u32) -> Result<String> {
        let text = self.full.decode(&[id], false).map_err(|e| Error::Tokenizer(e.to_string()))?;
        Ok(if self.clean_up_spaces { clean_up_tokenization(&text) } else { text })
    }

    pub fn max_seq_length(&self) -> usize {
        self.max_seq_length
    }

    /// Bytes of text handed to the tokenizer at a time. Tokenizers need about 250 bytes of
    /// memory per input byte, so a long text is read in windows: enough for max_seq_length
    /// tokens of any real text (32 bytes a token), within 16 KiB..1 MiB.
    pub fn window_bytes(&self) -> usize {
        (self.max_seq_length * 32).clamp(16 << 10, 1 << 20)
    }

    /// Content tokens max_seq_length leaves room for beside the special tokens.
    fn room(&self) -> usize {
        self.max_seq_length.saturating_sub(self.added_tokens)
    }

    /// Content tokens (no special tokens) of `prompt` + `text`, windowed: returns the first
    /// `keep` of them and how many there are in all (counting stops early at `keep` unless
    /// `count_all`). `interrupt` runs between windows.
    fn scan(&self, prompt: &str, text: &str, keep: usize, count_all: bool, window: usize, interrupt: &mut dyn FnMut()) -> Result<(Encoding, usize)> {
        let mut kept: Option<Encoding> = None;
        let mut total = 0;
        for (i, piece) in windows(text, window).enumerate() {
            if i > 0 {
                interrupt();
            }
            let joined;
            let piece = if i == 0 && !prompt.is_empty() {
                joined = format!("{prompt}{piece}");
                joined.as_str()
            } else {
                piece
            };
            let lowered;
            let piece = if self.do_lower_case {
                lowered = piece.to_lowercase();
                lowered.as_str()
            } else {
                piece
            };
            let enc = self.full.encode(piece, false).map_err(|e| Error::Tokenizer(e.to_string()))?;
            total += enc.len();
            match &mut kept {
                None => kept = Some(enc),
                Some(k) if k.len() < keep => k.merge_with(enc, true),
                Some(_) => {}
            }
            if total >= keep && !count_all {
                break;
            }
        }
        let mut kept = kept.unwrap_or_default();
        kept.truncate(keep, 0, TruncationDirection::Right);
        Ok((kept, total))
    }

    /// Tokens the model embeds for `prompt` + `text`. With `truncate`, the first
    /// max_seq_length tokens (special tokens included), exactly as sentence-transformers; without,
    /// an error when longer. Long texts are read in windows ([`TextTokenizer::window_bytes`]).
    pub fn encode_prompted(&self, prompt: &str, text: &str, truncate: bool, interrupt: &mut dyn FnMut()) -> Result<Encoded> {
        self.encode_windowed(prompt, text, truncate, self.window_bytes(), interrupt)
    }

    /// [`TextTokenizer::encode_prompted`] with an explicit window (tests use small ones).
    pub fn encode_windowed(&self, prompt: &str, text: &str, truncate: bool, window: usize, interrupt: &mut dyn FnMut()) -> Result<Encoded> {
        let room = self.room();
        if let Some(ascii) = self.ascii_for(prompt, text) {
            // The first `room` ids (scan keeps no more).
            let (mut ids, total) = ascii.scan(prompt, text, room, !truncate, window, interrupt);
            self.check_fits(total, truncate)?;
            ids.insert(0, ascii.cls);
            ids.push(ascii.sep);
            return Ok(Encoded { type_ids: vec![0; ids.len()], ids });
        }
        let (kept, total) = self.scan(prompt, text, room, !truncate, window, interrupt)?;
        self.check_fits(total, truncate)?;
        let enc = self.full.post_process(kept, None, true).map_err(|e| Error::Tokenizer(e.to_string()))?;
        Ok(Encoded { ids: enc.get_ids().to_vec(), type_ids: enc.get_type_ids().to_vec() })
    }

    /// Without `truncate`, `total` content tokens must fit max_seq_length beside the special ones.
    fn check_fits(&self, total: usize, truncate: bool) -> Result<()> {
        if !truncate && total > self.room() {
            return Err(Error::InputTooLong { model: self.model.clone(), tokens: total + self.added_tokens, limit: self.max_seq_length });
        }
        Ok(())
    }

    /// A (query, passage) pair for a cross-encoder, as FlagReranker.compute_score tokenises it
    /// with max_length = max_seq_length ([`TextTokenizer::pair_query`], then
    /// [`TextTokenizer::encode_pair_with`]).
    pub fn encode_pair(&self, query: &str, passage: &str, interrupt: &mut dyn FnMut()) -> Result<Encoded> {
        let query = self.pair_query(query, interrupt)?;
        self.encode_pair_with(&query, passage, interrupt)
    }

    /// A pair's query tokens (no special tokens): its first max_length × 3 ÷ 4 tokens, decoded
    /// and tokenised again. FlagReranker (under transformers 5, which has no id-level
    /// prepare_for_model) cuts the ids, decodes them and tokenises the text pair again, which
    /// can differ from the cut ids (an `<unk>` read back from its text, a trailing "▁" dropped).
    pub fn pair_query(&self, query: &str, interrupt: &mut dyn FnMut()) -> Result<Vec<u32>> {
        self.cut_and_read_again(query, self.max_seq_length * 3 / 4, interrupt).map(|(ids, _)| ids)
    }

    /// The pair of `query` (from [`TextTokenizer::pair_query`]) and `passage`: the passage's
    /// first max_length tokens, decoded and tokenised again, cut so that the pair with its
    /// special tokens fits max_length, joined as [`PairLayout`] says. A passage that decodes to
    /// no text leaves the query alone, as the tokenizer makes no pair of "".
    pub fn encode_pair_with(&self, query: &[u32], passage: &str, interrupt: &mut dyn FnMut()) -> Result<Encoded> {
        let layout = self.pair.ok_or_else(|| Error::Internal(format!("model \"{}\" has no pair layout", self.model)))?;
        let (mut p, text) = self.cut_and_read_again(passage, self.max_seq_length, interrupt)?;
        if text.is_empty() {
            let ids: Vec<u32> = std::iter::once(layout.cls).chain(query.iter().copied()).chain([layout.sep]).collect();
            return Ok(Encoded { type_ids: vec![0; ids.len()], ids });
        }
        p.truncate(self.max_seq_length.saturating_sub(query.len() + layout.added_tokens()));
        let mut ids = Vec::with_capacity(query.len() + p.len() + layout.added_tokens());
        ids.push(layout.cls);
        ids.extend_from_slice(query);
        ids.push(layout.sep);
        if layout.roberta {
            ids.push(layout.sep);
        }
        let first = ids.len();
        ids.extend_from_slice(&p);
        ids.push(layout.sep);
        let second_type = u32::from(!layout.roberta);
        let type_ids = (0..ids.len()).map(|i| if i < first { 0 } else { second_type }).collect();
        Ok(Encoded { ids, type_ids })
    }

    /// The first `keep` tokens of `text` (no special tokens), decoded with special tokens kept
    /// and tokenised again: the ids and the decoded text.
    fn cut_and_read_again(&self, text: &str, keep: usize, interrupt: &mut dyn FnMut()) -> Result<(Vec<u32>, String)> {
        let window = self.window_bytes();
        let (cut, _) = self.scan("", text, keep, false, window, interrupt)?;
        let decoded = self.full.decode(cut.get_ids(), false).map_err(|e| Error::Tokenizer(e.to_string()))?;
        let (again, _) = self.scan("", &decoded, usize::MAX, false, window, interrupt)?;
        Ok((again.get_ids().to_vec(), decoded))
    }

    pub fn encode(&self, text: &str, truncate: bool) -> Result<Encoded> {
        self.encode_prompted("", text, truncate, &mut || {})
    }

    /// Number of tokens of `prompt` + `text` with special tokens: capped at max_seq_length when
    /// `truncate` (what sentence-transformers feeds the model), the full count otherwise
    /// (windowed, so memory stays bounded whatever the length).
    pub fn count_prompted(&self, prompt: &str, text: &str, truncate: bool, interrupt: &mut dyn FnMut()) -> Result<usize> {
        self.count_windowed(prompt, text, truncate, self.window_bytes(), interrupt)
    }

    pub fn count_windowed(&self, prompt: &str, text: &str, truncate: bool, window: usize, interrupt: &mut dyn FnMut()) -> Result<usize> {
        let room = self.room();
        let keep = if truncate { room } else { 0 };
        let total = match self.ascii_for(prompt, text) {
            Some(ascii) => ascii.scan(prompt, text, keep, !truncate, window, interrupt).1,
            None => self.scan(prompt, text, keep, !truncate, window, interrupt)?.1,
        };
        Ok(if truncate { total.min(room) } else { total } + self.added_tokens)
    }

    pub fn count(&self, text: &str, truncate: bool) -> Result<usize> {
        self.count_prompted("", text, truncate, &mut || {})
    }

    /// Byte offsets in `text` of its tokens (no special tokens), as the `tokenizers` crate's
    /// `encode(text, false)` gives them, through the ASCII fast path where it covers `text`:
    /// where the chunker ([`crate::chunk`]) reads how many tokens lie before a place.
    pub fn token_offsets(&self, text: &str) -> Result<Vec<(usize, usize)>> {
        // Control characters join the words around them (the normalizer deletes them).
        let joins = |b: u8| matches!(b, 0..=0x08 | 0x0b | 0x0c | 0x0e..=0x1f | 0x7f);
        if let Some(ascii) = self.ascii_for("", text).filter(|_| !text.bytes().any(joins)) {
            return Ok(ascii.offsets(text));
        }
        let enc = self.full.encode(text, false).map_err(|e| Error::Tokenizer(e.to_string()))?;
        Ok(enc.get_offsets().to_vec())
    }

    /// The fast path, when this tokenizer has one and `prompt` + `text` are inputs it covers.
    fn ascii_for(&self, prompt: &str, text: &str) -> Option<&AsciiWordPiece> {
        self.ascii.as_ref().filter(|_| AsciiWordPiece::covers(prompt) && AsciiWordPiece::covers(text))
    }

    /// Whether ASCII inputs take the fast path ([`AsciiWordPiece`]; tests compare the two).
    pub fn has_ascii_fast_path(&self) -> bool {
        self.ascii.is_some()
    }
}

/// BERT's WordPiece tokenisation of ASCII text, token for token what the `tokenizers` crate
/// gives for a tokenizer.json of BertNormalizer (clean_text), BertPreTokenizer and WordPiece,
/// at a fraction of its cost (the crate keeps alignments per character and looks up Unicode
/// tables; a 10-token query took about 30 µs there). Taken only for ASCII text without '[':
/// every added token of such a tokenizer ([CLS], [MASK], …) holds a '[', so none can match,
/// and on ASCII the normalizer's accent stripping and Chinese-character spacing do nothing.
/// tests/tokenize_ascii.rs checks it against the crate on random and real text.
struct AsciiWordPiece {
    vocab: HashMap<String, u32>,
    /// Bytes of text each id stands for (a continuation piece without its prefix).
    piece_len: Vec<usize>,
    unk: u32,
    prefix: String,
    max_chars: usize,
    lowercase: bool,
    /// What the post-processor puts around one sequence.
    cls: u32,
    sep: u32,
}

impl AsciiWordPiece {
    fn new(full: &Tokenizer, do_lower_case: bool) -> Option<AsciiWordPiece> {
        let Some(NormalizerWrapper::BertNormalizer(norm)) = full.get_normalizer() else { return None };
        let Some(PreTokenizerWrapper::BertPreTokenizer(_)) = full.get_pre_tokenizer() else { return None };
        let ModelWrapper::WordPiece(wp) = full.get_model() else { return None };
        if !norm.clean_text || !full.get_added_tokens_decoder().values().all(|t| t.content.contains('[')) {
            return None;
        }
        let vocab = wp.get_vocab();
        let unk = *vocab.get(&wp.unk_token)?;
        // The post-processor must wrap a sequence as [cls] … [sep] with type 0, as BERT's does.
        let bare = full.encode("a", false).ok()?;
        let wrapped = full.encode("a", true).ok()?;
        let (ids, types) = (wrapped.get_ids(), wrapped.get_type_ids());
        if ids.len() != bare.len() + 2 || ids[1..ids.len() - 1] != *bare.get_ids() || types.iter().any(|&t| t != 0) {
            return None;
        }
        let (cls, sep) = (ids[0], ids[ids.len() - 1]);
        let lowercase = norm.lowercase || do_lower_case;
        let mut piece_len = vec![0; vocab.values().max().map_or(0, |&m| m as usize + 1)];
        for (piece, &id) in &vocab {
            piece_len[id as usize] = piece.strip_prefix(wp.continuing_subword_prefix.as_str()).unwrap_or(piece).len();
        }
        Some(AsciiWordPiece { vocab, piece_len, unk, prefix: wp.continuing_subword_prefix.clone(), max_chars: wp.max_input_chars_per_word, lowercase, cls, sep })
    }

    fn covers(text: &str) -> bool {
        text.is_ascii() && !text.contains('[')
    }

    /// As [`TextTokenizer::scan`], for texts this path covers: content ids of `prompt` + `text`
    /// (the first `keep`), and how many there are (counting stops at `keep` unless `count_all`).
    fn scan(&self, prompt: &str, text: &str, keep: usize, count_all: bool, window: usize, interrupt: &mut dyn FnMut()) -> (Vec<u32>, usize) {
        let (mut ids, mut word, mut candidate) = (Vec::new(), String::new(), String::new());
        let mut total = 0;
        for (i, piece) in windows(text, window).enumerate() {
            if i > 0 {
                interrupt();
            }
            let before = ids.len();
            if i == 0 {
                self.push_ids(prompt.as_bytes().iter().chain(piece.as_bytes()), &mut ids, &mut word, &mut candidate);
            } else {
                self.push_ids(piece.as_bytes().iter(), &mut ids, &mut word, &mut candidate);
            }
            total += ids.len() - before;
            ids.truncate(keep);
            if total >= keep && !count_all {
                break;
            }
        }
        (ids, total)
    }

    /// Appends the ids of ASCII `bytes`: BertNormalizer's clean-up (control characters other
    /// than tab, newline and return removed, those three read as spaces) and lowercasing, then
    /// BertPreTokenizer's split (whitespace separates, each punctuation mark is a word), then
    /// WordPiece per word.
    fn push_ids<'a>(&self, bytes: impl Iterator<Item = &'a u8>, ids: &mut Vec<u32>, word: &mut String, candidate: &mut String) {
        word.clear();
        for &b in bytes {
            match b {
                b' ' | b'\t' | b'\n' | b'\r' => self.push_word(word, ids, candidate),
                0..=0x1f | 0x7f => {}
                _ if b.is_ascii_punctuation() => {
                    self.push_word(word, ids, candidate);
                    word.push(b as char);
                    self.push_word(word, ids, candidate);
                }
                _ => word.push(if self.lowercase { b.to_ascii_lowercase() } else { b } as char),
            }
        }
        self.push_word(word, ids, candidate);
    }

    /// Token offsets of ASCII `text` without control characters other than tab, newline and
    /// return: words split as [`AsciiWordPiece::push_ids`] splits them, each piece as long as
    /// its vocabulary entry, an unknown word one token over all of it.
    fn offsets(&self, text: &str) -> Vec<(usize, usize)> {
        let (mut offsets, mut ids, mut word, mut candidate) = (Vec::new(), Vec::new(), String::new(), String::new());
        let mut start = 0;
        let mut flush = |word: &mut String, start: usize, offsets: &mut Vec<(usize, usize)>| {
            if word.is_empty() {
                return;
            }
            let len = word.len();
            ids.clear();
            self.push_word(word, &mut ids, &mut candidate);
            if ids[..] == [self.unk] {
                offsets.push((start, start + len));
            } else {
                let mut at = start;
                for &id in &ids {
                    let end = at + self.piece_len[id as usize];
                    offsets.push((at, end));
                    at = end;
                }
            }
        };
        for (i, &b) in text.as_bytes().iter().enumerate() {
            match b {
                b' ' | b'\t' | b'\n' | b'\r' => flush(&mut word, start, &mut offsets),
                _ if b.is_ascii_punctuation() => {
                    flush(&mut word, start, &mut offsets);
                    word.push(b as char);
                    flush(&mut word, i, &mut offsets);
                }
                _ => {
                    if word.is_empty() {
                        start = i;
                    }
                    word.push(if self.lowercase { b.to_ascii_lowercase() } else { b } as char);
                }
            }
        }
        flush(&mut word, start, &mut offsets);
        offsets
    }

    /// WordPiece: longest vocabulary prefix first, the rest as "##" pieces; a word with a part
    /// that matches nothing, or longer than max_input_chars_per_word, is one unknown token.
    fn push_word(&self, word: &mut String, ids: &mut Vec<u32>, candidate: &mut String) {
        if word.is_empty() {
            return;
        }
        let first = ids.len();
        let mut start = 0;
        while word.len() <= self.max_chars && start < word.len() {
            let found = (start + 1..=word.len()).rev().find_map(|end| {
                candidate.clear();
                if start > 0 {
                    candidate.push_str(&self.prefix);
                }
                candidate.push_str(&word[start..end]);
                self.vocab.get(candidate.as_str()).map(|&id| (id, end))
            });
            let Some((id, end)) = found else { break };
            ids.push(id);
            start = end;
        }
        if start < word.len() {
            ids.truncate(first);
            ids.push(self.unk);
        }
        word.clear();
    }
}

/// `text` in pieces of at most `window` bytes, each cut just before the first ASCII whitespace
/// character after a word: every tokenizer pg_bge reads (WordPiece, Unigram with Metaspace,
/// byte-level BPE) splits words there and keeps a whitespace run together, so the pieces'
/// tokens are the whole text's tokens (tests/tokenize_windows.rs). Where the last half of a
/// window has no such place (one "word" longer than half a window), the cut falls at a
/// character boundary and that word is tokenised as two.
pub fn windows(text: &str, window: usize) -> impl Iterator<Item = &str> {
    // At least one piece: an empty text is one empty window.
    let mut rest = Some(text);
    std::iter::from_fn(move || {
        let r = rest?;
        let (piece, tail) = r.split_at(cut_point(r, window.max(8)));
        rest = (!tail.is_empty()).then_some(tail);
        Some(piece)
    })
}

fn cut_point(text: &str, window: usize) -> usize {
    if text.len() <= window {
        return text.len();
    }
    let b = text.as_bytes();
    if let Some(p) = (window / 2..window).rev().find(|&p| b[p].is_ascii_whitespace() && !b[p - 1].is_ascii_whitespace()) {
        return p;
    }
    (1..=window).rev().find(|&p| text.is_char_boundary(p)).unwrap_or(window)
}

/// transformers' `clean_up_tokenization`: drops the space before punctuation and English
/// contractions.
fn clean_up_tokenization(text: &str) -> String {
    text.replace(" .", ".")
        .replace(" ?", "?")
        .replace(" !", "!")
        .replace(" ,", ",")
        .replace(" ' ", "'")
        .replace(" n't", "n't")
        .replace(" 'm", "'m")
        .replace(" 's", "'s")
        .replace(" 've", "'ve")
        .replace(" 're", "'re")
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    use std::str::FromStr;

    /// A BERT tokenizer.json with a tiny vocabulary, so that words with no decomposition
    /// (one unknown token for the whole word, even after pieces matched) are common.
    fn tiny_bert(lowercase: bool) -> Tokenizer {
        let pieces = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "a", "b", "ab", "abc", "##a", "##b", "##bc", "##c", "c", "!", ".", "x", "##x"];
        let vocab: Vec<String> = pieces.iter().enumerate().map(|(i, p)| format!("{:?}: {i}", p)).collect();
        let added: Vec<String> = pieces[..4].iter().enumerate().map(|(i, p)| format!(r#"{{"id": {i}, "content": "{p}", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}}"#)).collect();
        let json = format!(
            r###"{{"version": "1.0", "truncation": null, "padding": null, "added_tokens": [{}],
            "normalizer": {{"type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true, "strip_accents": null, "lowercase": {lowercase}}},
            "pre_tokenizer": {{"type": "BertPreTokenizer"}},
            "post_processor": {{"type": "TemplateProcessing",
                "single": [{{"SpecialToken": {{"id": "[CLS]", "type_id": 0}}}}, {{"Sequence": {{"id": "A", "type_id": 0}}}}, {{"SpecialToken": {{"id": "[SEP]", "type_id": 0}}}}],
                "pair": [{{"Sequence": {{"id": "A", "type_id": 0}}}}, {{"Sequence": {{"id": "B", "type_id": 1}}}}],
                "special_tokens": {{"[CLS]": {{"id": "[CLS]", "ids": [2], "tokens": ["[CLS]"]}}, "[SEP]": {{"id": "[SEP]", "ids": [3], "tokens": ["[SEP]"]}}}}}},
            "decoder": null,
            "model": {{"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##", "max_input_chars_per_word": 12, "vocab": {{{}}}}}}}"###,
            added.join(", "),
            vocab.join(", ")
        );
        Tokenizer::from_str(&json).unwrap()
    }

    #[test]
    fn ascii_fast_path_matches_the_crate_on_unknown_and_long_words() {
        for lowercase in [true, false] {
            let full = tiny_bert(lowercase);
            let fast = AsciiWordPiece::new(&full, false).expect("a BERT WordPiece tokenizer has the fast path");
            let mut rng = StdRng::seed_from_u64(3);
            for _ in 0..3000 {
                let text: String = (0..rng.random_range(0..30)).map(|_| { let alphabet = b"aabbcxXAB!. \t\x01z"; alphabet[rng.random_range(0..alphabet.len())] as char }).collect();
                let want = full.encode(text.as_str(), false).unwrap().get_ids().to_vec();
                let (got, total) = fast.scan("", &text, usize::MAX, true, 1 << 20, &mut || {});
                assert_eq!(got, want, "{text:?} (lowercase {lowercase})");
                assert_eq!(total, want.len());
            }
        }
    }
}
