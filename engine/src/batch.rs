//! A packed, padding-free batch: all sequences' tokens concatenated, delimited by cu_seqlens.
use crate::tokenize::Encoded;

/// How a sequence's tokens get their position ids: the one thing BERT and XLM-RoBERTa
/// embeddings differ in, so the encoder stays one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PositionIds {
    /// BERT: 0, 1, 2, … in token order.
    #[default]
    FromZero,
    /// RoBERTa / XLM-RoBERTa: a token equal to `pad_token_id` gets position pad_token_id; any
    /// other token gets pad_token_id + 1 + the number of non-pad tokens before it. An input
    /// without pad tokens (ours are never padded) runs pad+1, pad+2, …, so the usable length
    /// is max_position_embeddings - pad_token_id - 1 (8192 for BGE-M3's 8194 table).
    AfterPadding { pad_token_id: u32 },
}

impl PositionIds {
    /// Position ids of one sequence, appended to `out`.
    pub fn extend(self, ids: &[u32], out: &mut Vec<u32>) {
        match self {
            PositionIds::FromZero => out.extend(0..ids.len() as u32),
            PositionIds::AfterPadding { pad_token_id: pad } => {
                let mut count = 0;
                out.extend(ids.iter().map(|&id| {
                    if id == pad {
                        pad
                    } else {
                        count += 1;
                        pad + count
                    }
                }));
            }
        }
    }

    /// Rows of the position table below the first position a sequence uses.
    pub fn offset(self) -> usize {
        match self {
            PositionIds::FromZero => 0,
            PositionIds::AfterPadding { pad_token_id } => pad_token_id as usize + 1,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct PackedBatch {
    pub ids: Vec<u32>,
    pub type_ids: Vec<u32>,
    /// Position id of each token inside its own sequence (see [`PositionIds`]).
    pub positions: Vec<u32>,
    /// Sequence i occupies tokens cu_seqlens[i]..cu_seqlens[i+1].
    pub cu_seqlens: Vec<usize>,
    pub max_len: usize,
}

impl PackedBatch {
    /// A batch with BERT positions (0, 1, 2, …).
    pub fn new(seqs: &[&Encoded]) -> PackedBatch {
        Self::with_positions(seqs, PositionIds::FromZero)
    }

    pub fn with_positions(seqs: &[&Encoded], rule: PositionIds) -> PackedBatch {
        let total: usize = seqs.iter().map(|s| s.ids.len()).sum();
        let mut b = PackedBatch {
            ids: Vec::with_capacity(total),
            type_ids: Vec::with_capacity(total),
            positions: Vec::with_capacity(total),
            cu_seqlens: Vec::with_capacity(seqs.len() + 1),
            max_len: 0,
        };
        b.cu_seqlens.push(0);
        for s in seqs {
            b.ids.extend_from_slice(&s.ids);
            b.type_ids.extend_from_slice(&s.type_ids);
            rule.extend(&s.ids, &mut b.positions);
            b.cu_seqlens.push(b.ids.len());
            b.max_len = b.max_len.max(s.ids.len());
        }
        b
    }

    pub fn num_seqs(&self) -> usize {
        self.cu_seqlens.len() - 1
    }

    pub fn num_tokens(&self) -> usize {
        self.ids.len()
    }

    pub fn seq_range(&self, i: usize) -> std::ops::Range<usize> {
        self.cu_seqlens[i]..self.cu_seqlens[i + 1]
    }
}
