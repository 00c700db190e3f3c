//! `bge_chunk`: a text cut into pieces that each embed without truncation (the engine's
//! token-exact chunker, `bge_engine::chunk`). Only the model's tokenizer is needed, so with
//! the model server running no weights are loaded here.
use bge_engine::TextRole;
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;

use crate::compute::{check_interrupts, Call};
use crate::errors::{raise_with, OrRaise};

/// `input` in chunks of at most `max_tokens` tokens each (NULL: the model's max_seq_length),
/// each counted as `bge_token_count(chunk, model)` counts it, consecutive chunks sharing up to
/// `overlap` tokens. Characters are 1-based, `end_char` exclusive: `chunk = substr(input,
/// start_char, end_char - start_char)`. A NULL input gives no rows.
#[allow(clippy::type_complexity)]
#[pg_extern(immutable, parallel_safe, cost = 1000)]
fn bge_chunk(
    input: Option<&str>,
    model: Option<&str>,
    max_tokens: default!(Option<i32>, "NULL"),
    overlap: default!(Option<i32>, 0),
) -> TableIterator<
    'static,
    (name!(seq, i32), name!(chunk, String), name!(start_char, i32), name!(end_char, i32), name!(tokens, i32)),
> {
    let Some(model) = model else {
        raise_with(
            PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED,
            "model must not be NULL".into(),
            "Name an installed model, as bge_models() lists them.",
        )
    };
    let overlap = overlap.unwrap_or(0);
    if overlap < 0 {
        bad_argument(format!("overlap must not be negative, not {overlap}"));
    }
    // A NULL input chunks as '' does, into no rows, after the same checks of the arguments.
    let input = input.unwrap_or("");
    let ranges = chunk_ranges(input, model, max_tokens, overlap as usize);
    // Rows are made as they are fetched: with a large overlap the chunks' texts together are
    // many times the input's size, and only one is held at a time.
    let text = owned(input, &ranges);
    TableIterator::new(ranges.into_iter().enumerate().map(move |(i, r)| {
        (i as i32 + 1, text[r.bytes.0..r.bytes.1].to_string(), r.chars.0 as i32 + 1, r.chars.1 as i32 + 1, r.tokens as i32)
    }))
}

/// One chunk: its bytes and characters (0-based, end exclusive) in the input, and its tokens.
struct Range {
    bytes: (usize, usize),
    chars: (usize, usize),
    tokens: usize,
}

/// The input, owned by the rows' iterator (only as far as the last chunk reaches).
fn owned(input: &str, ranges: &[Range]) -> String {
    let used = &input[..ranges.last().map_or(0, |r| r.bytes.1)];
    let mut text = String::new();
    if text.try_reserve_exact(used.len()).is_err() {
        Err::<(), _>(bge_engine::Error::out_of_memory(used.len())).or_raise();
    }
    text.push_str(used);
    text
}

fn chunk_ranges(input: &str, model: &str, max_tokens: Option<i32>, overlap: usize) -> Vec<Range> {
    let call = Call::new(Some(model));
    let front = call.frontend();
    let tok = &front.tokenizer;
    let max_tokens_arg = max_tokens;
    let max_tokens = match max_tokens {
        None => tok.max_seq_length(),
        // Negative: below the minimum, which the engine's message names (with the value given).
        Some(n) => usize::try_from(n).unwrap_or(0),
    };
    // The passage prompt, as bge_token_count(text, model) counts (Frontend::count_tokens).
    let prompt = front.prompt(TextRole::Passage).unwrap_or("");
    let mut check = || {
        check_interrupts();
        Ok(())
    };
    let chunks = match tok.chunk_prompted(prompt, input, max_tokens, overlap, &mut check) {
        Ok(chunks) => chunks,
        Err(bge_engine::Error::InvalidArgument(message)) => bad_argument(for_sql(message, max_tokens_arg)),
        Err(e) => Err(e).or_raise(),
    };
    let mut ranges = Vec::new();
    if ranges.try_reserve_exact(chunks.len()).is_err() {
        Err::<(), _>(bge_engine::Error::out_of_memory(chunks.len() * std::mem::size_of::<Range>())).or_raise();
    }
    ranges.extend(chunks.iter().map(|c| Range { bytes: (c.start_byte, c.end_byte), chars: (c.start_char, c.end_char), tokens: c.tokens }));
    ranges
}

/// The engine's message with the max_tokens given (a negative one reached the engine as 0).
fn for_sql(message: String, max_tokens: Option<i32>) -> String {
    match (max_tokens, message.strip_suffix(", not 0")) {
        (Some(n), Some(head)) if n < 0 => format!("{head}, not {n}"),
        _ => message,
    }
}

fn bad_argument(message: String) -> ! {
    let hint = if message.starts_with("overlap") {
        "overlap is how many tokens a chunk may repeat of the one before: at least 0 and less than max_tokens."
    } else if message.contains("too small") {
        "Give a larger max_tokens, or NULL for the model's max_seq_length (the max_tokens column of bge_models())."
    } else {
        "max_tokens counts the special tokens too; NULL means the model's max_seq_length (the max_tokens column of bge_models())."
    };
    raise_with(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, message, hint)
}
