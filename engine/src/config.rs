//! Reads a sentence-transformers model directory into one [`ModelSpec`].
//!
//! sentence-transformers decides max_seq_length (sentence_bert_config.json), pooling
//! (1_Pooling/config.json) and normalisation (a Normalize entry in modules.json); config.json
//! gives the encoder's shape. We follow the same files so results match it exactly.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use crate::batch::PositionIds;
use crate::error::{invalid_file, Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// Exact GELU, 0.5·x·(1 + erf(x/√2)) ("gelu" in config.json).
    Gelu,
    /// tanh approximation ("gelu_new", "gelu_pytorch_tanh").
    GeluTanh,
}

/// Pooling modes of sentence-transformers' Pooling module; several may be on at once, and the
/// outputs are concatenated in this order (cls, max, mean, mean_sqrt_len), as it does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pooling {
    pub cls: bool,
    pub max: bool,
    pub mean: bool,
    pub mean_sqrt_len: bool,
}

impl Pooling {
    pub fn modes(&self) -> usize {
        [self.cls, self.max, self.mean, self.mean_sqrt_len].iter().filter(|m| **m).count()
    }

    /// Short name for bge_models(): "mean", "cls", or "cls+mean" when several are on.
    pub fn describe(&self) -> String {
        let names: Vec<&str> = [(self.cls, "cls"), (self.max, "max"), (self.mean, "mean"), (self.mean_sqrt_len, "mean_sqrt_len")]
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
}

impl ModelSpec {
    /// f32 activations a forward pass holds per token: hidden states (x, y, attention
    /// context), fused q|k|v, and the feed-forward intermediate.
    pub fn activation_bytes_per_token(&self) -> usize {
        4 * (6 * self.hidden_size + self.intermediate_size)
    }

    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_heads
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
            None => documented_query_prompt(&self.name),
        }
    }
}

#[derive(Deserialize)]
struct HfConfig {
    model_type: Option<String>,
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
        let cfg: HfConfig = read_json(&cfg_path)?;
        let model_type = cfg.model_type.clone().unwrap_or_default();
        let position_ids = match model_type.as_str() {
            "bert" => PositionIds::FromZero,
            "xlm-roberta" => PositionIds::AfterPadding { pad_token_id: cfg.pad_token_id.unwrap_or(1) },
            _ => return Err(unsupported(format!("model_type \"{model_type}\" (\"bert\" and \"xlm-roberta\" are implemented)"))),
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
        if cfg.hidden_size == 0 || cfg.num_attention_heads == 0 || cfg.hidden_size % cfg.num_attention_heads != 0 {
            return Err(invalid_file(&cfg_path, "hidden_size must be a positive multiple of num_attention_heads"));
        }
        // Sane bounds before anything is sized from these numbers (the largest published
        // encoders are far inside them).
        for (what, value, max) in [
            ("num_hidden_layers", cfg.num_hidden_layers, 256),
            ("hidden_size", cfg.hidden_size, 16_384),
            ("intermediate_size", cfg.intermediate_size, 131_072),
            ("vocab_size", cfg.vocab_size, 4_194_304),
            ("max_position_embeddings", cfg.max_position_embeddings, 1 << 20),
            ("type_vocab_size", cfg.type_vocab_size, 1_024),
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
        let usable_positions = cfg.max_position_embeddings.saturating_sub(position_ids.offset());
        let tokenizer_limit = || -> Result<Option<usize>> {
            let tc: Option<TokenizerConfig> = read_optional_json(&transformer_dir.join("tokenizer_config.json"))?;
            // transformers writes 1e30 for "no limit".
            Ok(tc.and_then(|t| t.model_max_length).filter(|n| *n >= 1.0 && *n <= usable_positions as f64).map(|n| n as usize))
        };
        let max_seq_length = match sbert.max_seq_length {
            Some(n) => n,
            None => tokenizer_limit()?.unwrap_or(usable_positions),
        };
        if max_seq_length < 2 || max_seq_length > usable_positions {
            return Err(invalid_file(
                &transformer_dir.join("sentence_bert_config.json"),
                format!(
                    "max_seq_length {max_seq_length} must be between 2 and the {usable_positions} positions the model has (max_position_embeddings {})",
                    cfg.max_position_embeddings
                ),
            ));
        }

        let pooling = match &pooling_dir {
            None if modules.is_some() => return Err(unsupported("modules.json has no Pooling module".into())),
            None => Pooling { mean: true, ..Default::default() },
            Some(p) => {
                let path = p.join("config.json");
                let pc: PoolingConfig = read_json(&path)?;
                if pc.pooling_mode_weightedmean_tokens || pc.pooling_mode_lasttoken {
                    return Err(unsupported("weighted-mean and last-token pooling".into()));
                }
                if !pc.include_prompt {
                    return Err(unsupported("pooling that excludes prompt tokens (include_prompt: false)".into()));
                }
                let mut pooling = Pooling {
                    cls: pc.pooling_mode_cls_token,
                    max: pc.pooling_mode_max_tokens,
                    mean: pc.pooling_mode_mean_tokens,
                    mean_sqrt_len: pc.pooling_mode_mean_sqrt_len_tokens,
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
                        "weightedmean" | "lasttoken" => return Err(unsupported("weighted-mean and last-token pooling".into())),
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

        Ok(ModelSpec {
            name: name.to_string(),
            dir: dir.to_path_buf(),
            architecture: cfg.architectures.and_then(|a| a.into_iter().next()).unwrap_or_else(|| {
                if model_type == "bert" { "BertModel" } else { "XLMRobertaModel" }.into()
            }),
            vocab_size: cfg.vocab_size,
            hidden_size: cfg.hidden_size,
            num_layers: cfg.num_hidden_layers,
            num_heads: cfg.num_attention_heads,
            intermediate_size: cfg.intermediate_size,
            max_position_embeddings: cfg.max_position_embeddings,
            type_vocab_size: cfg.type_vocab_size,
            layer_norm_eps: cfg.layer_norm_eps as f32,
            activation,
            max_seq_length,
            do_lower_case: sbert.do_lower_case,
            pooling,
            normalize,
            model_type,
            position_ids,
            // sentence-transformers reads a null prompt as "".
            prompts: st.prompts.unwrap_or_default().into_iter().map(|(k, v)| (k, v.unwrap_or_default())).collect(),
            default_prompt_name: st.default_prompt_name,
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
