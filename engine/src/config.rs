//! Reads a sentence-transformers model directory into one [`ModelSpec`].
//!
//! sentence-transformers decides max_seq_length (sentence_bert_config.json), pooling
//! (1_Pooling/config.json) and normalisation (a Normalize entry in modules.json); config.json
//! gives the encoder's shape. We follow the same files so results match it exactly.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{invalid_file, Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// Exact GELU, 0.5·x·(1 + erf(x/√2)) ("gelu" in config.json).
    Gelu,
    /// tanh approximation ("gelu_new", "gelu_pytorch_tanh").
    GeluTanh,
    /// x·sigmoid(x) ("silu"), the gate of Mistral's and Qwen3's MLP.
    Silu,
}

/// Pooling modes of sentence-transformers' Pooling module; several may be on at once, and the
/// outputs are concatenated in this order (cls, max, mean, mean_sqrt_len, last token), as it does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pooling {
    pub cls: bool,
    pub max: bool,
    pub mean: bool,
    pub mean_sqrt_len: bool,
    /// The last token's hidden state: decoder embedders (a causal model's last token is the
    /// only one that has seen the whole text).
    pub last_token: bool,
}

impl Pooling {
    /// Last-token pooling alone, what decoder embedders use.
    pub const LAST_TOKEN: Pooling = Pooling { cls: false, max: false, mean: false, mean_sqrt_len: false, last_token: true };
    /// The first token's hidden state: what a reranker's classification head reads.
    pub const CLS: Pooling = Pooling { cls: true, max: false, mean: false, mean_sqrt_len: false, last_token: false };

    pub fn modes(&self) -> usize {
        [self.cls, self.max, self.mean, self.mean_sqrt_len, self.last_token].iter().filter(|m| **m).count()
    }

    /// Short name for bge_models(): "mean", "cls", or "cls+mean" when several are on.
    pub fn describe(&self) -> String {
        let names: Vec<&str> = [(self.cls, "cls"), (self.max, "max"), (self.mean, "mean"), (self.mean_sqrt_len, "mean_sqrt_len"), (self.last_token, "last_token")]
            .iter()
            .filter(|(on, _)| *on)
            .map(|(_, n)| *n)
            .collect();
        names.join("+")
    }
}

#[derive(Debug, Clone)]
pub struct ModelSpec {
    pub name: String,
    pub dir: PathBuf,
    pub architecture: String,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub intermediate_size: usize,
    pub max_position_embeddings: usize,
    pub type_vocab_size: usize,
    pub layer_norm_eps: f32,
    pub activation: Activation,
    /// Longest input in tokens, special tokens included (sentence_bert_config.json).
    pub max_seq_length: usize,
    pub do_lower_case: bool,
    pub pooling: Pooling,
    pub normalize: bool,
    /// "bert" or "xlm-roberta" (config.json `model_type`).
    pub model_type: String,
    /// BERT numbers positions from 0; XLM-RoBERTa from pad_token_id + 1.
    pub position_ids: PositionIds,
    /// config_sentence_transformers.json `prompts` (name -> text prepended to the input).
    pub prompts: BTreeMap<String, String>,
    /// config_sentence_transformers.json `default_prompt_name`: the prompt sentence-transformers'
    /// encode() prepends to every input unless told otherwise.
    pub default_prompt_name: Option<String>,
    /// What makes a causal decoder embedder (Gemma2, Mistral, Qwen3); None for the BERT-style
    /// encoders.
    pub decoder: Option<DecoderSpec>,
    /// A decoder's query prompt with its default retrieval task (see [`DecoderSpec`]), used
    /// where config_sentence_transformers.json has no "query" prompt.
    pub decoder_query_prompt: Option<String>,
    /// What the model computes: embeddings, or relevance scores of (query, passage) pairs.
    pub kind: ModelKind,
}

/// What a model directory holds, by its config.json `architectures`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelKind {
    /// Sentence embeddings (a plain encoder or decoder, pooled).
    Embedder,
    /// A cross-encoder (…ForSequenceClassification with one label): one relevance logit per
    /// (query, passage) pair, from the first token's hidden state ([`crate::heads::classifier`]).
    Reranker,
}

impl ModelKind {
    pub fn name(self) -> &'static str {
        match self {
            ModelKind::Embedder => "embedder",
            ModelKind::Reranker => "reranker",
        }
    }

    /// "an embedder", "a reranker" (for messages).
    pub fn with_article(self) -> &'static str {
        match self {
            ModelKind::Embedder => "an embedder",
            ModelKind::Reranker => "a reranker",
        }
    }
}

/// The longest (query, passage) pair a reranker reads: FlagReranker's default max_length.
pub const RERANK_MAX_LENGTH: usize = 512;

/// The shape of a causal decoder used as an embedder. Gemma2, Mistral and Qwen3 are one network
/// (models/decoder/); they differ only in these settings.
#[derive(Debug, Clone, PartialEq)]
pub struct DecoderSpec {
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub rope_theta: f64,
    /// Gemma's RMSNorm multiplies by (1 + w); Llama-style ones (Mistral, Qwen3) by w.
    pub norm_adds_one: bool,
    /// Gemma2: the attention output and the MLP output are normalised again before they are
    /// added to the residual stream ("sandwich" norms).
    pub sandwich_norms: bool,
    /// Gemma: token embeddings times sqrt(hidden_size), that factor rounded to f32 first.
    pub embedding_scale: Option<f32>,
    /// Factor on q·k: query_pre_attn_scalar^-0.5 for Gemma2, head_dim^-0.5 for the others.
    pub attention_scale: f32,
    /// Gemma2: scores become cap·tanh(score/cap) before the mask (attn_logit_softcapping).
    pub attention_softcap: Option<f32>,
    /// Per layer: the sliding window (query i sees key j iff j ≤ i and i − j < window), or
    /// None for plain causal attention.
    pub layer_windows: Vec<Option<usize>>,
    /// Qwen3: an RMSNorm over every query and key head (width head_dim) before RoPE.
    pub qk_norm: bool,
    /// How a search query is phrased with a task instruction, `{task}` standing for it
    /// (`<instruct>{task}\n<query>` for the BGE decoders), and the retrieval task used by default.
    pub query_template: &'static str,
    pub default_task: &'static str,
}

impl ModelSpec {
    /// f32 activations a forward pass holds per token: hidden states (x, y, attention
    /// context), fused q|k|v, and the feed-forward intermediate.
    pub fn activation_bytes_per_token(&self) -> usize {
        match &self.decoder {
            None => 4 * (6 * self.hidden_size + self.intermediate_size),
            // x, y, the normed input; fused q|k|v and the attention output; gate|up and the
            // activated product.
            Some(d) => 4 * (3 * self.hidden_size + (2 * self.num_heads + 2 * d.num_kv_heads) * d.head_dim + 3 * self.intermediate_size),
        }
    }

    pub fn head_dim(&self) -> usize {
        match &self.decoder {
            Some(d) => d.head_dim,
            None => self.hidden_size / self.num_heads,
        }
    }

    /// The query prompt for task instruction `task`: the decoder's template filled in (e.g.
    /// `<instruct>{task}\n<query>`); for an encoder the instruction is the prompt itself (BGE's
    /// encoders take "Represent this sentence for searching relevant passages: " as is).
    pub fn prompt_for_task(&self, task: &str) -> String {
        match &self.decoder {
            Some(d) => d.query_template.replace("{task}", task),
            None => task.to_string(),
        }
    }

    pub fn dimensions(&self) -> usize {
        self.hidden_size * self.pooling.modes()
    }

    /// The prompt embeddings of passages get, as sentence-transformers' encode() applies it:
    /// the `default_prompt_name` entry of `prompts`, if any (no published BGE model sets one).
    pub fn default_prompt(&self) -> Option<&str> {
        self.default_prompt_name.as_ref().and_then(|n| self.prompts.get(n)).map(String::as_str).filter(|p| !p.is_empty())
    }

    /// The prompt queries get. As sentence-transformers' encode_query(): the `prompts` entry
    /// named "query" when there is one (an empty one means none, and then no default prompt
    /// either). A directory without a "query" prompt gets the instruction its model card
    /// documents ([`documented_query_prompt`]); without that, no prompt at all (the encode_query
    /// of sentence-transformers 6, whose prompts always hold a "query" key, empty by default,
    /// never falls back to `default_prompt_name`).
    pub fn query_prompt(&self) -> Option<&str> {
        match self.prompts.get("query") {
            Some(p) => Some(p.as_str()).filter(|p| !p.is_empty()),
            None => self.decoder_query_prompt.as_deref().or_else(|| documented_query_prompt(&self.name)),
        }
    }
}

#[derive(Deserialize)]
struct HfConfig {
    architectures: Option<Vec<String>>,
    vocab_size: usize,
    hidden_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    intermediate_size: usize,
    max_position_embeddings: usize,
    #[serde(default = "default_type_vocab")]
    type_vocab_size: usize,
    #[serde(default = "default_eps")]
    layer_norm_eps: f64,
    #[serde(default = "default_act")]
    hidden_act: String,
    #[serde(default)]
    position_embedding_type: Option<String>,
    #[serde(default)]
    pad_token_id: Option<u32>,
    /// Classification heads: the labels (transformers writes id2label; num_labels may be
    /// absent, and without either a classifier has 2).
    #[serde(default)]
    id2label: Option<BTreeMap<String, serde_json::Value>>,
    #[serde(default)]
    num_labels: Option<usize>,
}
fn default_type_vocab() -> usize {
    2
}
fn default_eps() -> f64 {
    1e-12
}
fn default_act() -> String {
    "gelu".into()
}

#[derive(Deserialize)]
struct StModule {
    #[serde(default)]
    path: String,
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Deserialize, Default)]
struct SbertConfig {
    max_seq_length: Option<usize>,
    #[serde(default)]
    do_lower_case: bool,
}

/// 1_Pooling/config.json: the classic `pooling_mode_*` booleans, or sentence-transformers 6's
/// `pooling_mode` ("cls", or a list of modes) and `include_prompt`.
#[derive(Deserialize, Default)]
struct PoolingConfig {
    #[serde(default)]
    pooling_mode: Option<PoolingModes>,
    #[serde(default = "yes")]
    include_prompt: bool,
    #[serde(default)]
    pooling_mode_cls_token: bool,
    #[serde(default)]
    pooling_mode_mean_tokens: bool,
    #[serde(default)]
    pooling_mode_max_tokens: bool,
    #[serde(default)]
    pooling_mode_mean_sqrt_len_tokens: bool,
    #[serde(default)]
    pooling_mode_weightedmean_tokens: bool,
    #[serde(default)]
    pooling_mode_lasttoken: bool,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum PoolingModes {
    One(String),
    Several(Vec<String>),
}

fn yes() -> bool {
    true
}

/// tokenizer_config.json, for the length sentence-transformers 6 keeps there.
#[derive(Deserialize, Default)]
struct TokenizerConfig {
    #[serde(default)]
    model_max_length: Option<f64>,
}

#[derive(Deserialize, Default)]
struct StConfig {
    #[serde(default)]
    prompts: Option<BTreeMap<String, Option<String>>>,
    #[serde(default)]
    default_prompt_name: Option<String>,
}

/// config.json's `model_type` alone, which decides how the rest is read.
#[derive(Deserialize)]
struct ModelTypeOnly {
    model_type: Option<String>,
}

/// The network's shape from config.json, for encoders and decoders alike.
struct Shape {
    architecture: String,
    vocab_size: usize,
    hidden_size: usize,
    num_layers: usize,
    num_heads: usize,
    intermediate_size: usize,
    max_position_embeddings: usize,
    type_vocab_size: usize,
    eps: f32,
    activation: Activation,
    position_ids: PositionIds,
    decoder: Option<DecoderSpec>,
    kind: ModelKind,
}

fn encoder_shape(cfg_path: &Path, model_type: &str, unsupported: &dyn Fn(String) -> Error) -> Result<Shape> {
    let cfg: HfConfig = read_json(cfg_path)?;
    let position_ids = match model_type {
        "bert" => PositionIds::FromZero,
        _ => PositionIds::AfterPadding { pad_token_id: cfg.pad_token_id.unwrap_or(1) },
    };
    if let Some(p) = &cfg.position_embedding_type {
        if p != "absolute" {
            return Err(unsupported(format!("position_embedding_type \"{p}\"")));
        }
    }
    let activation = match cfg.hidden_act.as_str() {
        "gelu" => Activation::Gelu,
        "gelu_new" | "gelu_pytorch_tanh" => Activation::GeluTanh,
        other => return Err(unsupported(format!("hidden_act \"{other}\""))),
    };
    if cfg.hidden_size == 0 || cfg.num_attention_heads == 0 || !cfg.hidden_size.is_multiple_of(cfg.num_attention_heads) {
        return Err(invalid_file(cfg_path, "hidden_size must be a positive multiple of num_attention_heads"));
    }
    let architecture = cfg.architectures.and_then(|a| a.into_iter().next()).unwrap_or_else(|| {
        if model_type == "bert" { "BertModel" } else { "XLMRobertaModel" }.into()
    });
    let kind = if architecture.ends_with("ForSequenceClassification") {
        let labels = cfg.num_labels.or(cfg.id2label.as_ref().map(|l| l.len())).unwrap_or(2);
        if labels != 1 {
            return Err(unsupported(format!("{architecture} with {labels} labels (a reranker has one)")));
        }
        ModelKind::Reranker
    } else {
        ModelKind::Embedder
    };
    Ok(Shape {
        architecture,
        kind,
        vocab_size: cfg.vocab_size,
        hidden_size: cfg.hidden_size,
        num_layers: cfg.num_hidden_layers,
        num_heads: cfg.num_attention_heads,
        intermediate_size: cfg.intermediate_size,
        max_position_embeddings: cfg.max_position_embeddings,
        type_vocab_size: cfg.type_vocab_size,
        eps: cfg.layer_norm_eps as f32,
        activation,
        position_ids,
        decoder: None,
    })
}

/// A decoder's config.json, in the spellings of transformers 4.x (`rope_theta`, `torch_dtype`)
/// and 5 (`rope_parameters`, `layer_types`, `dtype`). Keys that may be present but null
/// (`attn_logit_softcapping`, `sliding_window`, `head_dim`) are read from the raw object, so
/// "absent" (the architecture's default) and "null" (switched off) stay distinct.
#[derive(Deserialize)]
struct DecoderConfig {
    architectures: Option<Vec<String>>,
    vocab_size: usize,
    hidden_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: Option<usize>,
    intermediate_size: usize,
    max_position_embeddings: usize,
    rms_norm_eps: Option<f64>,
    rope_theta: Option<f64>,
    rope_parameters: Option<serde_json::Value>,
    rope_scaling: Option<serde_json::Value>,
    hidden_activation: Option<String>,
    hidden_act: Option<String>,
    query_pre_attn_scalar: Option<f64>,
    layer_types: Option<Vec<String>>,
    use_sliding_window: Option<bool>,
    max_window_layers: Option<usize>,
    attention_bias: Option<bool>,
}

/// `key` of a raw config: Ok(None) when absent, Ok(Some(None)) when null.
fn raw_number(raw: &serde_json::Value, key: &str, cfg_path: &Path) -> Result<Option<Option<f64>>> {
    match raw.get(key) {
        None => Ok(None),
        Some(serde_json::Value::Null) => Ok(Some(None)),
        Some(v) => v.as_f64().map(|n| Some(Some(n))).ok_or_else(|| invalid_file(cfg_path, format!("{key} is not a number"))),
    }
}

fn decoder_shape(cfg_path: &Path, model_type: &str, unsupported: &dyn Fn(String) -> Error) -> Result<Shape> {
    let cfg: DecoderConfig = read_json(cfg_path)?;
    let raw: serde_json::Value = read_json(cfg_path)?;
    let gemma2 = model_type == "gemma2";
    let heads = cfg.num_attention_heads;
    let kv_heads = cfg.num_key_value_heads.unwrap_or(heads);
    if heads == 0 || kv_heads == 0 || !heads.is_multiple_of(kv_heads) {
        return Err(invalid_file(cfg_path, "num_attention_heads must be a positive multiple of num_key_value_heads"));
    }
    // transformers' defaults where a key is absent; a null head_dim means hidden / heads.
    let head_dim = match raw_number(&raw, "head_dim", cfg_path)? {
        Some(Some(d)) => d as usize,
        None if gemma2 => 256,
        None if model_type == "qwen3" => 128,
        _ => cfg.hidden_size / heads.max(1),
    };
    if head_dim == 0 || head_dim % 2 != 0 || head_dim > 1024 {
        return Err(invalid_file(cfg_path, format!("head_dim {head_dim} must be even and at most 1024")));
    }
    // RoPE: plain (unscaled) rotary embeddings only.
    let rope_type = |v: &serde_json::Value| v.get("rope_type").or_else(|| v.get("type")).and_then(|t| t.as_str()).map(str::to_string);
    for params in [&cfg.rope_parameters, &cfg.rope_scaling].into_iter().flatten() {
        match rope_type(params).as_deref() {
            None | Some("default") => {}
            Some(other) => return Err(unsupported(format!("RoPE scaling \"{other}\""))),
        }
    }
    let rope_theta = cfg
        .rope_parameters
        .as_ref()
        .and_then(|p| p.get("rope_theta"))
        .and_then(|t| t.as_f64())
        .or(cfg.rope_theta)
        .unwrap_or(10_000.0);
    let activation_name = cfg.hidden_activation.or(cfg.hidden_act).unwrap_or_else(|| if gemma2 { "gelu_pytorch_tanh" } else { "silu" }.into());
    let activation = match activation_name.as_str() {
        "gelu_pytorch_tanh" | "gelu_new" => Activation::GeluTanh,
        "silu" | "swish" => Activation::Silu,
        other => return Err(unsupported(format!("hidden_act \"{other}\" in a decoder"))),
    };
    if raw.get("use_bidirectional_attention").and_then(|v| v.as_bool()) == Some(true) {
        return Err(unsupported("bidirectional attention in a decoder (use_bidirectional_attention: true)".into()));
    }
    if cfg.attention_bias == Some(true) {
        return Err(unsupported("attention biases (attention_bias: true)".into()));
    }
    let n = cfg.num_hidden_layers;
    let window = match raw_number(&raw, "sliding_window", cfg_path)? {
        Some(Some(w)) if w >= 1.0 => Some(w as usize),
        Some(_) => None,
        None if gemma2 => Some(4096),
        None => None,
    };
    // Which layers slide: `layer_types` when the config lists them (transformers 5); else
    // Gemma2's even layers, every Mistral layer when a window is set, and Qwen3's layers from
    // max_window_layers on when use_sliding_window is set.
    let sliding: Vec<bool> = match &cfg.layer_types {
        Some(types) => {
            if types.len() != n {
                return Err(invalid_file(cfg_path, format!("layer_types lists {} layers, num_hidden_layers is {n}", types.len())));
            }
            types
                .iter()
                .map(|t| match t.as_str() {
                    "sliding_attention" => Ok(true),
                    "full_attention" => Ok(false),
                    other => Err(unsupported(format!("layer type \"{other}\""))),
                })
                .collect::<Result<_>>()?
        }
        None if gemma2 => (0..n).map(|l| l % 2 == 0).collect(),
        None if model_type == "qwen3" => {
            let from = cfg.max_window_layers.unwrap_or(n);
            (0..n).map(|l| cfg.use_sliding_window == Some(true) && l >= from).collect()
        }
        None => vec![true; n],
    };
    if sliding.iter().any(|s| *s) && window.is_none() {
        return Err(invalid_file(cfg_path, "sliding-window layers without a sliding_window size"));
    }
    let layer_windows = sliding.iter().map(|s| if *s { window } else { None }).collect();
    let softcap = match raw_number(&raw, "attn_logit_softcapping", cfg_path)? {
        Some(c) => c,
        None if gemma2 => Some(50.0),
        None => None,
    };
    let scale = if gemma2 { cfg.query_pre_attn_scalar.unwrap_or(256.0) } else { head_dim as f64 };
    let (query_template, default_task) = match model_type {
        "qwen3" => ("Instruct: {task}\nQuery:", "Given a web search query, retrieve relevant passages that answer the query"),
        _ => ("<instruct>{task}\n<query>", "Given a web search query, retrieve relevant passages that answer the query."),
    };
    let decoder = DecoderSpec {
        num_kv_heads: kv_heads,
        head_dim,
        rope_theta,
        norm_adds_one: gemma2,
        sandwich_norms: gemma2,
        // The scale is a tensor of the activation dtype in transformers: rounded to f32 here.
        embedding_scale: gemma2.then(|| (cfg.hidden_size as f64).sqrt() as f32),
        attention_scale: (1.0 / scale.sqrt()) as f32,
        attention_softcap: softcap.filter(|c| *c > 0.0).map(|c| c as f32),
        layer_windows,
        qk_norm: model_type == "qwen3",
        query_template,
        default_task,
    };
    Ok(Shape {
        architecture: cfg.architectures.and_then(|a| a.into_iter().next()).unwrap_or_else(|| model_type.to_string()),
        vocab_size: cfg.vocab_size,
        hidden_size: cfg.hidden_size,
        num_layers: n,
        num_heads: heads,
        intermediate_size: cfg.intermediate_size,
        max_position_embeddings: cfg.max_position_embeddings,
        type_vocab_size: 1,
        eps: cfg.rms_norm_eps.unwrap_or(1e-6) as f32,
        activation,
        position_ids: PositionIds::FromZero,
        decoder: Some(decoder),
        kind: ModelKind::Embedder,
    })
}

/// A module's directory named in modules.json: a relative path inside the model directory
/// (no "..", no absolute path), so a downloaded modules.json cannot point the server elsewhere.
fn module_dir(dir: &Path, path: &str) -> Result<PathBuf> {
    let rel = Path::new(path);
    if !rel.components().all(|c| matches!(c, std::path::Component::Normal(_) | std::path::Component::CurDir)) {
        return Err(invalid_file(&dir.join("modules.json"), format!("module path \"{path}\" leaves the model directory")));
    }
    Ok(dir.join(rel))
}

/// Largest JSON configuration file read (configs are kilobytes).
const MAX_CONFIG_BYTES: u64 = 16 << 20;

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    let missing = |e: std::io::Error| match e.kind() {
        std::io::ErrorKind::NotFound => Error::MissingFile { path: path.to_path_buf() },
        _ => invalid_file(path, e),
    };
    if std::fs::metadata(path).map_err(missing)?.len() > MAX_CONFIG_BYTES {
        return Err(invalid_file(path, format!("larger than {MAX_CONFIG_BYTES} bytes")));
    }
    let text = std::fs::read_to_string(path).map_err(missing)?;
    serde_json::from_str(&text).map_err(|e| invalid_file(path, e))
}

fn read_optional_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Option<T>> {
    if path.exists() {
        read_json(path).map(Some)
    } else {
        Ok(None)
    }
}

impl ModelSpec {
    pub fn load(name: &str, dir: &Path) -> Result<ModelSpec> {
        let unsupported = |reason: String| Error::Unsupported { model: name.to_string(), reason };
        let cfg_path = dir.join("config.json");
        let kind: ModelTypeOnly = read_json(&cfg_path)?;
        let model_type = kind.model_type.unwrap_or_default();
        let shape = match model_type.as_str() {
            "bert" | "xlm-roberta" => encoder_shape(&cfg_path, &model_type, &unsupported)?,
            "gemma2" | "mistral" | "qwen3" => decoder_shape(&cfg_path, &model_type, &unsupported)?,
            _ => {
                return Err(unsupported(format!(
                    "model_type \"{model_type}\" (\"bert\", \"xlm-roberta\", \"gemma2\", \"mistral\" and \"qwen3\" are implemented)"
                )))
            }
        };
        let position_ids = shape.position_ids;
        // Sane bounds before anything is sized from these numbers (the largest published
        // models are far inside them).
        for (what, value, max) in [
            ("num_hidden_layers", shape.num_layers, 256),
            ("hidden_size", shape.hidden_size, 16_384),
            ("intermediate_size", shape.intermediate_size, 131_072),
            ("vocab_size", shape.vocab_size, 4_194_304),
            ("max_position_embeddings", shape.max_position_embeddings, 1 << 20),
            ("type_vocab_size", shape.type_vocab_size, 1_024),
            ("num_attention_heads", shape.num_heads, 1_024),
        ] {
            if value == 0 || value > max {
                return Err(invalid_file(&cfg_path, format!("{what} = {value} is outside 1..={max}")));
            }
        }

        // modules.json: Transformer, then Pooling, then optionally Normalize. A directory without
        // it is a plain Hugging Face model, which sentence-transformers wraps with mean pooling.
        let modules: Option<Vec<StModule>> = read_optional_json(&dir.join("modules.json"))?;
        let mut transformer_dir = dir.to_path_buf();
        let mut pooling_dir: Option<PathBuf> = None;
        let mut normalize = false;
        match &modules {
            None => {}
            Some(mods) => {
                for m in mods {
                    let short = m.kind.rsplit('.').next().unwrap_or(&m.kind);
                    match short {
                        "Transformer" => transformer_dir = module_dir(dir, &m.path)?,
                        "Pooling" => pooling_dir = Some(module_dir(dir, &m.path)?),
                        "Normalize" => normalize = true,
                        other => return Err(unsupported(format!("sentence-transformers module \"{other}\" in modules.json"))),
                    }
                }
            }
        }

        // max_seq_length: sentence_bert_config.json; sentence-transformers 6 keeps it as the
        // tokenizer's model_max_length instead; else every position the table has.
        let sbert: SbertConfig = read_optional_json(&transformer_dir.join("sentence_bert_config.json"))?.unwrap_or_default();
        let usable_positions = shape.max_position_embeddings.saturating_sub(position_ids.offset());
        let tokenizer_limit = || -> Result<Option<usize>> {
            let tc: Option<TokenizerConfig> = read_optional_json(&transformer_dir.join("tokenizer_config.json"))?;
            // transformers writes 1e30 for "no limit".
            Ok(tc.and_then(|t| t.model_max_length).filter(|n| *n >= 1.0 && *n <= usable_positions as f64).map(|n| n as usize))
        };
        let max_seq_length = match (shape.kind, sbert.max_seq_length) {
            // A pair's limit is FlagReranker's max_length, within the model's positions.
            (ModelKind::Reranker, _) => RERANK_MAX_LENGTH.min(usable_positions),
            (_, Some(n)) => n,
            (_, None) => tokenizer_limit()?.unwrap_or(usable_positions),
        };
        if max_seq_length < 2 || max_seq_length > usable_positions {
            return Err(invalid_file(
                &transformer_dir.join("sentence_bert_config.json"),
                format!(
                    "max_seq_length {max_seq_length} must be between 2 and the {usable_positions} positions the model has (max_position_embeddings {})",
                    shape.max_position_embeddings
                ),
            ));
        }

        let pooling = match &pooling_dir {
            // A cross-encoder saved by sentence-transformers lists its Transformer alone.
            None if modules.is_some() && shape.kind == ModelKind::Embedder => return Err(unsupported("modules.json has no Pooling module".into())),
            // A bare decoder directory: its embedding is the last token's (as every decoder
            // embedder pools), normalised.
            None if shape.decoder.is_some() => Pooling::LAST_TOKEN,
            None => Pooling { mean: true, ..Default::default() },
            Some(p) => {
                let path = p.join("config.json");
                let pc: PoolingConfig = read_json(&path)?;
                if pc.pooling_mode_weightedmean_tokens {
                    return Err(unsupported("weighted-mean pooling".into()));
                }
                if !pc.include_prompt {
                    return Err(unsupported("pooling that excludes prompt tokens (include_prompt: false)".into()));
                }
                let mut pooling = Pooling {
                    cls: pc.pooling_mode_cls_token,
                    max: pc.pooling_mode_max_tokens,
                    mean: pc.pooling_mode_mean_tokens,
                    mean_sqrt_len: pc.pooling_mode_mean_sqrt_len_tokens,
                    last_token: pc.pooling_mode_lasttoken,
                };
                let modes = match &pc.pooling_mode {
                    None => vec![],
                    Some(PoolingModes::One(m)) => vec![m.clone()],
                    Some(PoolingModes::Several(ms)) => ms.clone(),
                };
                for mode in modes {
                    match mode.as_str() {
                        "cls" => pooling.cls = true,
                        "max" => pooling.max = true,
                        "mean" => pooling.mean = true,
                        "mean_sqrt_len_tokens" => pooling.mean_sqrt_len = true,
                        "lasttoken" => pooling.last_token = true,
                        "weightedmean" => return Err(unsupported("weighted-mean pooling".into())),
                        other => return Err(invalid_file(&path, format!("unknown pooling mode \"{other}\""))),
                    }
                }
                if pooling.modes() == 0 {
                    return Err(invalid_file(&path, "no pooling mode is enabled"));
                }
                pooling
            }
        };

        let st: StConfig = read_optional_json(&dir.join("config_sentence_transformers.json"))?.unwrap_or_default();
        // Decoder embedders are trained on normalised last-token vectors; a bare directory
        // (no modules.json) gets the normalisation its model card applies.
        let normalize = normalize || (modules.is_none() && shape.decoder.is_some());

        Ok(ModelSpec {
            name: name.to_string(),
            dir: dir.to_path_buf(),
            architecture: shape.architecture,
            vocab_size: shape.vocab_size,
            hidden_size: shape.hidden_size,
            num_layers: shape.num_layers,
            num_heads: shape.num_heads,
            intermediate_size: shape.intermediate_size,
            max_position_embeddings: shape.max_position_embeddings,
            type_vocab_size: shape.type_vocab_size,
            layer_norm_eps: shape.eps,
            activation: shape.activation,
            max_seq_length,
            // FlagReranker reads only the tokenizer's files.
            do_lower_case: sbert.do_lower_case && shape.kind == ModelKind::Embedder,
            pooling,
            normalize,
            model_type,
            position_ids,
            // sentence-transformers reads a null prompt as "".
            prompts: st.prompts.unwrap_or_default().into_iter().map(|(k, v)| (k, v.unwrap_or_default())).collect(),
            default_prompt_name: st.default_prompt_name,
            decoder_query_prompt: shape.decoder.as_ref().map(|d| d.query_template.replace("{task}", d.default_task)),
            decoder: shape.decoder,
            kind: shape.kind,
        })
    }
}

/// Query instructions documented on the BGE model cards, for directories whose
/// config_sentence_transformers.json has no "query" prompt (matched on the directory name):
/// the English and Chinese BGE models (v1 and v1.5). BGE-M3 needs no instruction.
pub fn documented_query_prompt(name: &str) -> Option<&'static str> {
    let name = name.to_ascii_lowercase();
    if !name.starts_with("bge-") {
        return None;
    }
    if name.contains("-en") {
        Some("Represent this sentence for searching relevant passages: ")
    } else if name.contains("-zh") {
        Some("为这个句子生成表示以用于检索相关文章：")
    } else {
        None
    }
}

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
