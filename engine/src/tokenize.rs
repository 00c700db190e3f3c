//! Tokenisation with the model's own tokenizer.json (the `tokenizers` crate, the same code
//! sentence-transformers runs through its fast tokenizer).
//!
//! sentence-transformers truncates at max_seq_length (special tokens included) and pads nothing
//! we care about; the tokenizer.json's own truncation/padding settings are ignored, as it does.
use std::path::Path;

use serde::Deserialize;
use tokenizers::models::ModelWrapper;
use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

use crate::config::ModelSpec;
use crate::error::{invalid_file, Error, Result};

pub struct TextTokenizer {
    model: String,
    /// Truncates to max_seq_length.
    truncating: Tokenizer,
    /// Never truncates: used for `bge.truncate = off` and for counting.
    full: Tokenizer,
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
        let mut truncating = full.clone();
        truncating
            .with_truncation(Some(TruncationParams {
                max_length: spec.max_seq_length,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
                direction: TruncationDirection::Right,
            }))
            .map_err(|e| invalid_file(path, e))?;
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

        Ok(TextTokenizer {
            model: spec.name.clone(),
            truncating,
            full,
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

    fn run(&self, tok: &Tokenizer, text: &str) -> Result<Encoded> {
        let lowered;
        let text = if self.do_lower_case {
            lowered = text.to_lowercase();
            lowered.as_str()
        } else {
            text
        };
        let enc = tok.encode(text, true).map_err(|e| Error::Tokenizer(e.to_string()))?;
        Ok(Encoded { ids: enc.get_ids().to_vec(), type_ids: enc.get_type_ids().to_vec() })
    }

    /// Tokens the model will embed. With `truncate`, the first max_seq_length tokens (special
    /// tokens included), exactly as sentence-transformers; without, an error when too long.
    pub fn encode(&self, text: &str, truncate: bool) -> Result<Encoded> {
        if truncate {
            return self.run(&self.truncating, text);
        }
        let enc = self.run(&self.full, text)?;
        if enc.ids.len() > self.max_seq_length {
            return Err(Error::InputTooLong { model: self.model.clone(), tokens: enc.ids.len(), limit: self.max_seq_length });
        }
        Ok(enc)
    }

    /// Number of tokens of `text` with special tokens: capped at max_seq_length when
    /// `truncate` (what sentence-transformers feeds the model), the full count otherwise.
    pub fn count(&self, text: &str, truncate: bool) -> Result<usize> {
        let n = self.run(&self.full, text)?.ids.len();
        Ok(if truncate { n.min(self.max_seq_length) } else { n })
    }
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
