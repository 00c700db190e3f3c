//! A packed, padding-free batch: all sequences' tokens concatenated, delimited by cu_seqlens.
use crate::config::PositionIds;
use crate::tokenize::Encoded;

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
