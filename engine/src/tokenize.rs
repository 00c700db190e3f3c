//! Tokenisation with the model's own tokenizer.json (the `tokenizers` crate, the same code
//! sentence-transformers runs through its fast tokenizer).
//!
//! sentence-transformers truncates at max_seq_length (special tokens included) and pads nothing
//! we care about; the tokenizer.json's own truncation/padding settings are ignored, as it does.
use std::path::Path;

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
        Ok(TextTokenizer {
            model: spec.name.clone(),
            truncating,
            full,
            max_seq_length: spec.max_seq_length,
            do_lower_case: spec.do_lower_case,
        })
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
