//! Token-exact chunking: a long text cut into pieces that each embed without truncation.
//!
//! A chunk's token count is [`TextTokenizer::count_prompted`] of the chunk text alone (what
//! `bge_token_count` gives), never a sum over the whole text's tokens: a piece can tokenise
//! differently at its edges than it does inside the text. The text is read in windows of a few
//! chunks; the tokenizer's offsets in a window say where the budget runs out and how many tokens
//! lie before each possible boundary. The chosen piece is then re-tokenised on its own and cut
//! shorter when it does not fit, so the estimate only has to be close, never exact.
use crate::error::{Error, Result};
use crate::tokenize::{windows, TextTokenizer};

/// One piece of a text, in characters (not bytes) of the text it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chunk {
    /// Index of the chunk's first character (0-based).
    pub start_char: usize,
    /// One past its last character.
    pub end_char: usize,
    /// The same span in bytes of the UTF-8 text.
    pub start_byte: usize,
    pub end_byte: usize,
    /// Tokens the model embeds for the chunk text, special tokens (and prompt) included.
    pub tokens: usize,
}

/// Where a chunk may end, worst to best.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Boundary {
    /// Between two tokens inside a word longer than a chunk.
    Token,
    /// After a whitespace-separated word.
    Space,
    /// After . ! ? followed by whitespace, or after 。！？.
    Sentence,
    /// Before a blank line, or at the end of the text.
    Paragraph,
}

/// Chunks a window should hold, so that most chunks reuse the window of the one before.
const WINDOW_CHUNKS: usize = 4;

impl TextTokenizer {
    /// The smallest `max_tokens` [`TextTokenizer::chunk`] accepts: one token beside the special
    /// tokens the post-processor adds.
    pub fn min_chunk_tokens(&self) -> usize {
        self.added_tokens + 1
    }

    /// [`TextTokenizer::chunk_prompted`] without a prompt.
    pub fn chunk(&self, text: &str, max_tokens: usize, overlap: usize, check: &mut dyn FnMut() -> Result<()>) -> Result<Vec<Chunk>> {
        self.chunk_prompted("", text, max_tokens, overlap, check)
    }

    /// `text` cut into chunks of at most `max_tokens` tokens each, counted as
    /// [`TextTokenizer::count_prompted`] counts `prompt` + the chunk (the prompt of the role the
    /// chunks will be embedded in; "" for none). Chunks come in text order, trimmed of
    /// whitespace, and together hold every non-whitespace character. Each is as long as fits,
    /// ending by preference at a blank line, a sentence end, a space, and only inside a word
    /// longer than a chunk at a token boundary. With `overlap`, a chunk starts with at most
    /// that many tokens (counted alone, without special tokens) of the end of the one before,
    /// starting at a word. `check` runs between chunks and windows (query cancellation).
    pub fn chunk_prompted(
        &self,
        prompt: &str,
        text: &str,
        max_tokens: usize,
        overlap: usize,
        check: &mut dyn FnMut() -> Result<()>,
    ) -> Result<Vec<Chunk>> {
        let prompt_tokens = if prompt.is_empty() { 0 } else { self.count_prompted(prompt, "", false, &mut || {})? - self.added_tokens };
        let (min, max) = (self.min_chunk_tokens() + prompt_tokens, self.max_seq_length());
        if max_tokens < min || max_tokens > max {
            return Err(Error::InvalidArgument(format!(
                "max_tokens must be between {min} and {max} for model \"{}\", not {max_tokens}",
                self.model
            )));
        }
        if overlap >= max_tokens {
            return Err(Error::InvalidArgument(format!("overlap must be less than max_tokens ({max_tokens}), not {overlap}")));
        }
        let mut chunker = Chunker {
            tok: self,
            prompt,
            text,
            max_tokens,
            budget: max_tokens - self.added_tokens - prompt_tokens,
            overlap,
            window: Window::default(),
            bytes_per_token: 6,
        };
        chunker.run(check)
    }
}

/// The tokens of `text[start..]` up to some end, with offsets in bytes of the whole text.
#[derive(Default)]
struct Window {
    start: usize,
    end: usize,
    /// Token start and end offsets, each made non-decreasing.
    starts: Vec<usize>,
    ends: Vec<usize>,
    /// Tokens that the window's end cannot have changed: all when it reaches the text's end.
    trusted: usize,
    complete: bool,
    /// Grown to its largest size without holding a chunk's tokens (a huge word that
    /// WordPiece reads as one unknown token): a chunk may end at its end.
    capped: bool,
    loaded: bool,
}

struct Chunker<'t> {
    tok: &'t TextTokenizer,
    prompt: &'t str,
    text: &'t str,
    max_tokens: usize,
    /// Content tokens a chunk may hold beside the special tokens and the prompt.
    budget: usize,
    overlap: usize,
    window: Window,
    /// Bytes per token in the last window, to size the next.
    bytes_per_token: usize,
}

impl Chunker<'_> {
    fn run(&mut self, check: &mut dyn FnMut() -> Result<()>) -> Result<Vec<Chunk>> {
        let text = self.text;
        let mut chunks = Vec::new();
        // Chunk starts only move forward: characters are counted from the last one.
        let (mut anchor_byte, mut anchor_char) = (0, 0);
        let mut prev_end = 0;
        let mut pos = skip_space(text, 0);
        while pos < text.len() {
            check()?;
            let (start, end, tokens) = match self.next_chunk(pos, prev_end, check)? {
                Some((end, tokens)) => (pos, end, tokens),
                None => {
                    // The overlap left no room to move forward: start after the previous chunk.
                    let fresh = skip_space(text, prev_end);
                    let (end, tokens) = self.next_chunk(fresh, fresh, check)?.ok_or_else(|| Error::Internal("chunking made no progress".into()))?;
                    (fresh, end, tokens)
                }
            };
            let start_char = anchor_char + text[anchor_byte..start].chars().count();
            let end_char = start_char + text[start..end].chars().count();
            chunks.try_reserve(1).map_err(|_| Error::out_of_memory((chunks.len() + 1) * std::mem::size_of::<Chunk>()))?;
            chunks.push(Chunk { start_char, end_char, start_byte: start, end_byte: end, tokens });
            (anchor_byte, anchor_char) = (start, start_char);
            prev_end = end;
            let after = skip_space(text, end);
            if after >= text.len() {
                break;
            }
            pos = match self.overlap_start(start, end, check)? {
                Some(o) => o,
                None => after,
            };
        }
        Ok(chunks)
    }

    /// Tokens of `prompt` + `s` with special tokens: the count a chunk reports. `check` runs
    /// between the count's windows (a word longer than one); its error is returned after.
    fn count(&self, prompt: &str, s: &str, check: &mut dyn FnMut() -> Result<()>) -> Result<usize> {
        let mut checked = Ok(());
        let n = self.tok.count_prompted(prompt, s, false, &mut || {
            if checked.is_ok() {
                checked = check();
            }
        })?;
        checked.map(|()| n)
    }

    /// The largest chunk starting at `pos` and ending after `min_end` that fits: its end
    /// (trimmed) and token count. None when only a start after `min_end` can make progress.
    fn next_chunk(&mut self, pos: usize, min_end: usize, check: &mut dyn FnMut() -> Result<()>) -> Result<Option<(usize, usize)>> {
        let text = self.text;
        // Tokens beside the content: special tokens and prompt.
        let fixed = self.max_tokens - self.budget;
        let mut budget = self.budget;
        let (mut floor, mut cap) = (min_end.max(pos), text.len() + 1);
        let (mut factor, mut grown) = (1, 0);
        let mut at_least = Boundary::Token;
        let mut best = None;
        self.ensure_window(pos, budget + 1, check)?;
        while let Some((end, kind)) = self.choose(pos, floor, budget, cap, at_least, check)? {
            let tokens = self.count(self.prompt, &text[pos..end], check)?;
            if tokens <= self.max_tokens {
                best = Some((end, tokens));
                let estimate = self.tokens_between(pos, end) + fixed;
                if grown == 4 || tokens == self.max_tokens || estimate <= tokens {
                    break;
                }
                // The piece tokenises shorter alone than in the window (Unigram finds longer
                // pieces): look further with the budget corrected by the difference, at as good
                // a boundary unless this chunk is under half full.
                grown += 1;
                budget += estimate - tokens;
                floor = end;
                if (tokens - fixed) * 2 >= self.budget {
                    at_least = kind;
                }
                self.ensure_window(pos, budget + 1, check)?;
                continue;
            }
            // Longer alone than in the window: cut back by the excess, more each time so that
            // a run of small misses cannot take long.
            let excess = (tokens - self.max_tokens) * factor;
            factor *= 2;
            cap = end;
            budget = budget.saturating_sub(excess).max(1);
        }
        if best.is_some() {
            return Ok(best);
        }
        if pos < min_end {
            return Ok(None);
        }
        // Nothing fits at any boundary: one character, the smallest piece there is.
        let end = pos + text[pos..].chars().next().map_or(0, char::len_utf8);
        let tokens = self.count(self.prompt, &text[pos..end], check)?;
        if tokens > self.max_tokens {
            return Err(Error::InvalidArgument(format!(
                "max_tokens {} is too small for model \"{}\": the character at position {} takes {tokens} tokens on its own",
                self.max_tokens,
                self.tok.model,
                // 1-based, as a reader (and SQL's substr) counts.
                text[..pos].chars().count() + 1
            )));
        }
        Ok(Some((end, tokens)))
    }

    /// The end of a chunk from `pos` holding about `budget` content tokens by the window's
    /// estimate: at the best boundary that still gives at least half the budget, else at the
    /// last space unless the word after it is longer than a chunk, else at a token boundary.
    /// Only ends before `cap` count (a longer piece was re-tokenised and did not fit).
    /// Only boundaries of kind `at_least` or better count.
    fn choose(
        &self,
        pos: usize,
        min_end: usize,
        budget: usize,
        cap: usize,
        at_least: Boundary,
        check: &mut dyn FnMut() -> Result<()>,
    ) -> Result<Option<(usize, Boundary)>> {
        let text = self.text;
        let limit = floor_char_boundary(text, self.fit_end(pos, budget).min(cap.saturating_sub(1)));
        if limit >= text.len() && text[pos..].trim_end().len() + pos > min_end {
            return Ok(Some((pos + text[pos..].trim_end().len(), Boundary::Paragraph)));
        }
        let boundaries = boundaries(text, pos, limit);
        let usable = |kind: Boundary| boundaries.iter().rev().find(|&&(b, k)| k >= kind && b > min_end && b <= limit).copied();
        for kind in [Boundary::Paragraph, Boundary::Sentence, Boundary::Space].into_iter().filter(|&k| k >= at_least) {
            if let Some((b, k)) = usable(kind) {
                if self.tokens_between(pos, b) * 2 >= budget {
                    return Ok(Some((b, k)));
                }
            }
        }
        if at_least > Boundary::Space {
            return Ok(None);
        }
        // The last space even inside the overlap: if the word after it fits in a chunk, the
        // chunk ends there, or (when that gives no progress) starts without the overlap.
        if let Some(&(b, k)) = boundaries.iter().rev().find(|&&(b, _)| b > pos && b <= limit && text[b..].starts_with(char::is_whitespace)) {
            if self.word_fits(skip_space(text, b), check)? {
                return Ok((b > min_end).then_some((b, k)));
            }
        }
        if at_least > Boundary::Token {
            return Ok(None);
        }
        // Inside a word longer than a chunk (or a text without spaces): a token boundary.
        let end = pos + text[pos..limit].trim_end().len();
        Ok((end > min_end).then_some((end, Boundary::Token)))
    }

    /// Whether the word at `word` (up to the next whitespace) fits in a chunk on its own.
    fn word_fits(&self, word: usize, check: &mut dyn FnMut() -> Result<()>) -> Result<bool> {
        let text = self.text;
        let end = text[word..].find(char::is_whitespace).map_or(text.len(), |i| word + i);
        let estimate = self.tokens_between(word, end);
        Ok(if !self.known_until(end) || (estimate > self.budget && estimate <= 2 * self.budget + 8) {
            // Past the window (WordPiece reads a word of over 100 characters as one token)
            // or near the limit: count it. A long word is counted once, by the chunk before it.
            self.count(self.prompt, &text[word..end], check)? <= self.max_tokens
        } else {
            estimate <= self.budget
        })
    }

    /// Where the window's tokens say `budget` content tokens from `pos` end: the start of the
    /// first token past them (or the text's end).
    fn fit_end(&self, pos: usize, budget: usize) -> usize {
        let w = &self.window;
        let next = self.first_token(pos) + budget;
        let at = if next < w.trusted {
            w.starts[next]
        } else if w.complete {
            self.text.len()
        } else {
            // A capped window: its end, where the windowed count cuts such a word too.
            w.end
        };
        floor_char_boundary(self.text, at.max(pos))
    }

    /// Index of the first window token that ends after `pos`.
    fn first_token(&self, pos: usize) -> usize {
        self.window.ends.partition_point(|&e| e <= pos)
    }

    /// Window tokens overlapping `a..b` (those cut by either edge included, so the estimate
    /// errs on the long side).
    fn tokens_between(&self, a: usize, b: usize) -> usize {
        self.window.starts.partition_point(|&s| s < b).saturating_sub(self.first_token(a))
    }

    /// Whether the window's trusted tokens cover the text up to `end`.
    fn known_until(&self, end: usize) -> bool {
        let w = &self.window;
        w.complete || (w.trusted > 0 && w.ends[w.trusted - 1] >= end)
    }

    /// Makes the window cover `pos` and at least `need` trusted tokens after it, tokenising
    /// a new one from `pos` when the current one does not (growing it until it does).
    fn ensure_window(&mut self, pos: usize, need: usize, check: &mut dyn FnMut() -> Result<()>) -> Result<()> {
        let enough = |w: &Window, first: usize| w.loaded && w.start <= pos && (w.complete || w.trusted >= first + need || (w.capped && w.start == pos));
        if enough(&self.window, self.first_token(pos)) {
            return Ok(());
        }
        let mut bytes = need.max(self.max_tokens) * WINDOW_CHUNKS * self.bytes_per_token;
        // Memory stays near what a windowed count takes; sparse text (long whitespace runs)
        // still gets a chunk's worth of tokens.
        let cap = self.tok.window_bytes().max(64 << 10).max(2 * bytes);
        loop {
            check()?;
            self.load_window(pos, bytes.min(cap))?;
            self.window.capped = bytes >= cap;
            if enough(&self.window, self.first_token(pos)) {
                return Ok(());
            }
            bytes *= 2;
        }
    }

    fn load_window(&mut self, pos: usize, bytes: usize) -> Result<()> {
        let text = self.text;
        // The windowed count's own cut: just before whitespace after a word where there is one.
        let piece = windows(&text[pos..], bytes).next().unwrap_or("");
        let end = pos + piece.len();
        let offsets = self.tok.token_offsets(piece)?;
        let w = &mut self.window;
        w.starts.clear();
        w.ends.clear();
        let (mut s_max, mut e_max) = (pos, pos);
        for &(s, e) in &offsets {
            s_max = s_max.max(pos + s);
            e_max = e_max.max(pos + e);
            w.starts.push(s_max);
            w.ends.push(e_max);
        }
        let n = w.starts.len();
        w.start = pos;
        w.end = end;
        w.loaded = true;
        w.complete = end >= text.len();
        w.trusted = if w.complete || text[end..].starts_with(char::is_whitespace) {
            n
        } else if let Some(space) = piece.rfind(char::is_whitespace) {
            // Cut inside a word: its tokens may be other than the whole word's.
            w.ends.partition_point(|&e| e <= pos + space)
        } else {
            // Inside a word longer than the window, read in pieces anyway.
            n.saturating_sub(4)
        };
        if let Some(bpt) = piece.len().checked_div(n) {
            self.bytes_per_token = bpt.clamp(1, 64);
        }
        Ok(())
    }

    /// Where the chunk after `start..end` starts: the earliest word start in it whose text up to
    /// `end` has at most `overlap` content tokens when tokenised alone. None for no overlap.
    /// Word starts are those after whitespace and, in scripts written without spaces, those
    /// between ideographs ([`is_ideograph_break`]).
    fn overlap_start(&self, start: usize, end: usize, check: &mut dyn FnMut() -> Result<()>) -> Result<Option<usize>> {
        if self.overlap == 0 {
            return Ok(None);
        }
        let text = self.text;
        let mut starts = Vec::new();
        let mut after: Option<char> = None;
        for (i, c) in text[start..end].char_indices().rev() {
            if let Some(a) = after {
                if c.is_whitespace() || is_ideograph_break(c, a) {
                    let o = start + i + c.len_utf8();
                    if self.tokens_between(o, end) > self.overlap {
                        break;
                    }
                    starts.push(o);
                }
            }
            after = (!c.is_whitespace()).then_some(c);
        }
        // Earliest first; the window's estimate errs long, so the first try usually holds.
        for &o in starts.iter().rev().take(8) {
            if self.count("", &text[o..end], check)? - self.tok.added_tokens <= self.overlap {
                return Ok(Some(o));
            }
        }
        Ok(None)
    }
}

/// Possible chunk ends in `text[from..=to]`, in order, with their kind.
fn boundaries(text: &str, from: usize, to: usize) -> Vec<(usize, Boundary)> {
    let mut found = Vec::new();
    let mut prev: Option<char> = None;
    for (i, c) in text[from..to].char_indices() {
        let b = from + i;
        if let Some(p) = prev {
            if !p.is_whitespace() && c.is_whitespace() {
                found.push((b, kind_at(text, b)));
            } else if is_cjk_sentence_end(p) && !c.is_whitespace() {
                found.push((b, Boundary::Sentence));
            }
        }
        prev = Some(c);
    }
    if let Some(p) = prev.filter(|p| !p.is_whitespace()) {
        if to == text.len() || text[to..].starts_with(char::is_whitespace) || is_cjk_sentence_end(p) {
            found.push((to, kind_at(text, to)));
        }
    }
    found
}

/// The kind of boundary at `b`, just after a word.
fn kind_at(text: &str, b: usize) -> Boundary {
    let mut newlines = 0;
    for c in text[b..].chars().take_while(|c| c.is_whitespace()) {
        newlines += (c == '\n') as usize;
        if newlines == 2 {
            return Boundary::Paragraph;
        }
    }
    if b == text.len() || text[b..].trim_start().is_empty() {
        return Boundary::Paragraph;
    }
    let before = text[..b].trim_end_matches(['"', '\'', ')', ']', '”', '’', '»', '」', '』', '）']);
    match before.chars().next_back() {
        Some('.' | '!' | '?') => Boundary::Sentence,
        Some(c) if is_cjk_sentence_end(c) => Boundary::Sentence,
        _ => Boundary::Space,
    }
}

fn is_cjk_sentence_end(c: char) -> bool {
    matches!(c, '。' | '！' | '？')
}

/// Whether a word may start at `next` after `prev` in text without spaces: before an ideograph
/// or kana that follows another or CJK punctuation (a line-break opportunity of Unicode's line
/// breaking rules, where each ideograph stands as a word).
pub fn is_ideograph_break(prev: char, next: char) -> bool {
    is_ideograph(next) && (is_ideograph(prev) || matches!(prev, '\u{3000}'..='\u{303F}' | '\u{FF01}'..='\u{FF0F}' | '\u{FF1A}'..='\u{FF1F}'))
}

/// Han ideographs, hiragana and katakana.
fn is_ideograph(c: char) -> bool {
    matches!(c, '\u{3040}'..='\u{30FF}' | '\u{31F0}'..='\u{31FF}' | '\u{3400}'..='\u{4DBF}' | '\u{4E00}'..='\u{9FFF}' | '\u{F900}'..='\u{FAFF}' | '\u{20000}'..='\u{3FFFF}')
}

/// The first non-whitespace byte at or after `pos` (or the text's length).
fn skip_space(text: &str, pos: usize) -> usize {
    text[pos..].find(|c: char| !c.is_whitespace()).map_or(text.len(), |i| pos + i)
}

fn floor_char_boundary(text: &str, mut at: usize) -> usize {
    at = at.min(text.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}
