//! Tokenisation with the model's own tokenizer.json (the `tokenizers` crate, the same code
//! sentence-transformers runs through its fast tokenizer).
//!
//! sentence-transformers truncates at max_seq_length (special tokens included) and pads nothing
//! we care about; the tokenizer.json's own truncation/padding settings are ignored, as it does.
use std::path::Path;

use serde::Deserialize;
use tokenizers::models::ModelWrapper;
use tokenizers::{Encoding, PostProcessor, Tokenizer, TruncationDirection};

use crate::config::ModelSpec;
use crate::error::{invalid_file, Error, Result};

pub struct TextTokenizer {
    model: String,
    /// The model's tokenizer with its own truncation and padding switched off: truncation is
    /// ours ([`TextTokenizer::encode`]).
    full: Tokenizer,
    /// Special tokens its post-processor adds to one sequence ([CLS] … [SEP]: 2).
    added_tokens: usize,
    max_seq_length: usize,
    do_lower_case: bool,
    /// Ids of the cls, eos, pad and unk tokens: the ones BGE-M3's sparse output leaves out.
    special_ids: Vec<u32>,
    /// transformers' clean_up_tokenization_spaces, applied by [`TextTokenizer::token_text`].
    clean_up_spaces: bool,
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
        Ok(TextTokenizer {
            model: spec.name.clone(),
            full,
            added_tokens,
            max_seq_length: spec.max_seq_length,
            do_lower_case: spec.do_lower_case,
            special_ids,
            clean_up_spaces,
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
        let (kept, total) = self.scan(prompt, text, room, !truncate, window, interrupt)?;
        if !truncate && total > room {
            return Err(Error::InputTooLong { model: self.model.clone(), tokens: total + self.added_tokens, limit: self.max_seq_length });
        }
        let enc = self.full.post_process(kept, None, true).map_err(|e| Error::Tokenizer(e.to_string()))?;
        Ok(Encoded { ids: enc.get_ids().to_vec(), type_ids: enc.get_type_ids().to_vec() })
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
        let (_, total) = self.scan(prompt, text, if truncate { room } else { 0 }, !truncate, window, interrupt)?;
        Ok(if truncate { total.min(room) } else { total } + self.added_tokens)
    }

    pub fn count(&self, text: &str, truncate: bool) -> Result<usize> {
        self.count_prompted("", text, truncate, &mut || {})
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
