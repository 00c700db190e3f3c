#!/usr/bin/env python3
"""Builds tiny random-weight decoder embedders (Gemma2, and Mistral- and Qwen3-shaped ones) and
their goldens:

    python3 scripts/goldens/make_decoder_goldens.py [ARCH ...]      (default: gemma2 mistral qwen3)

For each ARCH, engine/tests/models/tiny-ARCH receives a sentence-transformers directory laid out
as bge-multilingual-gemma2 is published: config.json, the weights, tokenizer.json with
tokenizer_config.json, modules.json (Transformer, Pooling with last-token pooling, Normalize),
1_Pooling/config.json and sentence_bert_config.json; no config_sentence_transformers.json, so
queries get the engine's default retrieval instruction. engine/tests/goldens/tiny-ARCH.json
receives token ids and embeddings computed by transformers.

The models are built to expose the mistakes a decoder port can make:
  - Gemma2: random norm weights (zero at init, which would hide a missing "1 + w"),
    query_pre_attn_scalar != head_dim, an attention soft-cap of 2.0 that the scores exceed,
    a sliding window of 8 tokens on even layers (texts are longer), grouped-query attention
    (4 query heads, 2 kv heads), heads * head_dim != hidden_size, 4 layers, and weights saved
    in shards with model.safetensors.index.json and no "model." prefix.
  - Mistral: a sliding window on every layer; SiLU-gated MLP; plain RMSNorm (w, not 1 + w);
    one file whose tensor names carry the "model." prefix (saved from MistralForCausalLM).
  - Qwen3: per-head q/k RMSNorm before RoPE; full causal attention; "model." prefix.

The tokenizer (shared) is a small byte-fallback BPE trained here with the `tokenizers` library
on the golden texts, with Gemma's conventions: normaliser Replace(" ", "▁"), no pre-tokenizer,
specials <pad> <eos> <bos> <unk>, the 256 byte tokens <0x00>..<0xFF>, added tokens <instruct>
and <query>, and a post-processor that adds <bos> only (as Gemma's tokenizer: add_bos_token
true, add_eos_token false), wrapped in PreTrainedTokenizerFast with left padding.

Goldens (transformers' <Arch>Model, attn_implementation="eager", fp32, CPU): each text alone
(positions 0..len-1, no padding), last token's hidden state, L2-normalised; token ids from
the same tokenizer with truncation at max_seq_length. Queries are "<instruct>{task}\\n<query>{q}"
(Qwen3: "Instruct: {task}\\nQuery:{q}") for the default retrieval task and for another task.
A left-padded batch of all texts (the way FlagEmbedding runs them) is computed too and must
agree with the one-by-one vectors; it is checked here, not stored.

Needs: python3 -m pip install torch transformers safetensors tokenizers (CPU wheels are enough).
Tests and CI never need PyTorch: the models and goldens are committed.
"""
import json
import os
import shutil
import sys

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
from golden_texts import TEXTS  # noqa: E402

MAX_SEQ_LENGTH = 96
DEFAULT_TASK = "Given a web search query, retrieve relevant passages that answer the query."
QWEN3_DEFAULT_TASK = "Given a web search query, retrieve relevant passages that answer the query"
OTHER_TASK = "Given a question, retrieve passages that answer it"
QUERIES = [
    "what is the capital of France?",
    "",
    "Crème brûlée recipe",
    "how do vector databases index embeddings for retrieval-augmented generation at scale",
]
EXTRA_TEXTS = [
    # Literal special and added tokens typed into a passage.
    "<instruct> is an added token, and so is <query>; <bos> and <eos> are special.",
    # Exactly around the window and the truncation limit.
    " ".join(["word"] * 7),
    " ".join(["word"] * 40),
    " ".join(f"w{i}" for i in range(200)),
]


def build_tokenizer(dest):
    specials = ["<pad>", "<eos>", "<bos>", "<unk>"]
    byte_tokens = [f"<0x{b:02X}>" for b in range(256)]
    trainer_tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    trainer_tok.normalizer = normalizers.Replace(" ", "▁")
    # Training splits at "▁" so no merge spans two words; the saved tokenizer, like Gemma's,
    # has no pre-tokenizer.
    trainer_tok.pre_tokenizer = pre_tokenizers.Split("▁", behavior="merged_with_next")
    corpus = TEXTS + EXTRA_TEXTS + QUERIES + [DEFAULT_TASK, OTHER_TASK] * 3
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=specials, show_progress=False, min_frequency=2)
    trainer_tok.train_from_iterator(corpus, trainer)
    trained = json.loads(trainer_tok.to_str())
    vocab = dict(trained["model"]["vocab"])
    for t in byte_tokens:
        if t not in vocab:
            vocab[t] = len(vocab)
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in trained["model"]["merges"]]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.normalizer = normalizers.Replace(" ", "▁")
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
    tok.add_special_tokens(specials)
    tok.add_tokens(["<instruct>", "<query>"])
    bos = tok.token_to_id("<bos>")
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", pair="<bos> $A $B", special_tokens=[("<bos>", bos)])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", unk_token="<unk>", pad_token="<pad>", padding_side="left"
    )
    fast.model_max_length = MAX_SEQ_LENGTH
    fast.save_pretrained(dest)
    # transformers 5 writes a tokenizer_config.json naming its own class; keep what Gemma's says.
    cfg_path = os.path.join(dest, "tokenizer_config.json")
    with open(cfg_path) as f:
        cfg = json.load(f)
    cfg.update(add_bos_token=True, add_eos_token=False, padding_side="left")
    with open(cfg_path, "w") as f:
        json.dump(cfg, f, indent=2)
    return PreTrainedTokenizerFast.from_pretrained(dest)


def model_for(arch, vocab_size):
    import transformers as tf

    common = dict(vocab_size=vocab_size, hidden_size=48, intermediate_size=96, num_attention_heads=4, num_key_value_heads=2,
                  head_dim=24, rms_norm_eps=1e-6, max_position_embeddings=512, pad_token_id=0, bos_token_id=2, eos_token_id=1,
                  attn_implementation="eager")
    if arch == "gemma2":
        cfg = tf.Gemma2Config(num_hidden_layers=4, query_pre_attn_scalar=36, attn_logit_softcapping=2.0, sliding_window=8, **common)
        return cfg, tf.Gemma2Model(cfg), tf.Gemma2Model, ""
    if arch == "mistral":
        cfg = tf.MistralConfig(num_hidden_layers=3, sliding_window=8, rope_theta=5000.0, **common)
        return cfg, tf.MistralForCausalLM(cfg), tf.MistralModel, "model."
    if arch == "qwen3":
        cfg = tf.Qwen3Config(num_hidden_layers=3, tie_word_embeddings=True, **common)
        return cfg, tf.Qwen3ForCausalLM(cfg), tf.Qwen3Model, "model."
    raise SystemExit(f"unknown architecture {arch}")


def randomise(model):
    g = torch.Generator().manual_seed(1234)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight") or "layernorm" in name or name.endswith(("q_norm.weight", "k_norm.weight")):
                # Random gains around the convention's identity (0 for Gemma's 1 + w, 1 else).
                p.copy_(torch.randn(p.shape, generator=g) * 0.5 + (0.0 if "Gemma" in type(model).__name__ else 1.0))
            else:
                p.copy_(torch.randn(p.shape, generator=g) * 0.15)


def write_sentence_transformers_files(dest):
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
    ]
    with open(os.path.join(dest, "modules.json"), "w") as f:
        json.dump(modules, f, indent=2)
    os.makedirs(os.path.join(dest, "1_Pooling"), exist_ok=True)
    os.makedirs(os.path.join(dest, "2_Normalize"), exist_ok=True)
    with open(os.path.join(dest, "2_Normalize", "config.json"), "w") as f:
        json.dump({}, f)
    with open(os.path.join(dest, "1_Pooling", "config.json"), "w") as f:
        json.dump({"word_embedding_dimension": 48, "pooling_mode_cls_token": False, "pooling_mode_mean_tokens": False,
                   "pooling_mode_max_tokens": False, "pooling_mode_mean_sqrt_len_tokens": False,
                   "pooling_mode_weightedmean_tokens": False, "pooling_mode_lasttoken": True, "include_prompt": True}, f, indent=2)
    with open(os.path.join(dest, "sentence_bert_config.json"), "w") as f:
        json.dump({"max_seq_length": MAX_SEQ_LENGTH, "do_lower_case": False}, f, indent=2)


def embed(model, tokenizer, texts):
    """One text at a time: positions 0..len-1, the last token's state, normalised."""
    ids, vecs = [], []
    for t in texts:
        enc = tokenizer(t, truncation=True, max_length=MAX_SEQ_LENGTH, return_tensors="pt")
        with torch.no_grad():
            out = model(**enc).last_hidden_state[0, -1]
        ids.append(enc["input_ids"][0].tolist())
        vecs.append(torch.nn.functional.normalize(out, dim=-1).tolist())
    return ids, vecs


def embed_left_padded(model, tokenizer, texts):
    enc = tokenizer(texts, truncation=True, max_length=MAX_SEQ_LENGTH, padding=True, return_tensors="pt")
    positions = (enc["attention_mask"].cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        out = model(**enc, position_ids=positions).last_hidden_state[:, -1]
    return torch.nn.functional.normalize(out, dim=-1)


def make(arch, tokenizer_dir):
    torch.manual_seed(0)
    name = f"tiny-{arch}"
    dest = os.path.join(ROOT, "engine", "tests", "models", name)
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(tokenizer_dir, dest)
    tokenizer = PreTrainedTokenizerFast.from_pretrained(dest)
    cfg, saved, base_class, prefix = model_for(arch, len(tokenizer))
    randomise(saved)
    # Gemma2 in shards (as bge-multilingual-gemma2 is published); the others in one file.
    saved.save_pretrained(dest, max_shard_size="200KB" if arch == "gemma2" else "50MB")
    if os.path.exists(os.path.join(dest, "generation_config.json")):
        os.remove(os.path.join(dest, "generation_config.json"))  # a text-generation setting
    write_sentence_transformers_files(dest)
    for root, _, files in os.walk(dest):
        for f in files:
            os.chmod(os.path.join(root, f), 0o644)
    model = base_class.from_pretrained(dest, attn_implementation="eager", torch_dtype=torch.float32).eval()
    for n, p in model.named_parameters():
        assert torch.equal(p, dict(saved.named_parameters())[prefix + n]), n

    texts = TEXTS + EXTRA_TEXTS
    token_ids, embeddings = embed(model, tokenizer, texts)
    padded = embed_left_padded(model, tokenizer, texts)
    worst = min(torch.dot(padded[i], torch.tensor(embeddings[i])).item() for i in range(len(texts)))
    assert worst > 0.99999, f"{arch}: left-padded batch disagrees with one-by-one ({worst})"

    template = "Instruct: {task}\nQuery:" if arch == "qwen3" else "<instruct>{task}\n<query>"
    default_task = QWEN3_DEFAULT_TASK if arch == "qwen3" else DEFAULT_TASK
    queries = []
    for task in (default_task, OTHER_TASK):
        prompt = template.format(task=task)
        q_ids, q_vecs = embed(model, tokenizer, [prompt + q for q in QUERIES])
        for q, i, v in zip(QUERIES, q_ids, q_vecs):
            queries.append({"query": q, "task": task, "default_task": task == default_task, "token_ids": i, "embedding": v})

    goldens = {
        "model": name,
        "transformers": __import__("transformers").__version__,
        "torch": torch.__version__,
        "max_seq_length": MAX_SEQ_LENGTH,
        "texts": texts,
        "token_ids": token_ids,
        "embeddings": embeddings,
        "queries": queries,
    }
    path = os.path.join(ROOT, "engine", "tests", "goldens", f"{name}.json")
    with open(path, "w") as f:
        json.dump(goldens, f)
    size = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(dest) for f in fs)
    print(f"{name}: {len(texts)} texts, {len(queries)} queries, vocab {len(tokenizer)}, {size} bytes in {dest}; "
          f"left-padded batch agrees to cosine {worst:.7f}")


def main():
    torch.set_num_threads(1)
    archs = sys.argv[1:] or ["gemma2", "mistral", "qwen3"]
    tmp = os.path.join(ROOT, "target", "decoder-tokenizer")
    shutil.rmtree(tmp, ignore_errors=True)
    build_tokenizer(tmp)
    for arch in archs:
        make(arch, tmp)


if __name__ == "__main__":
    main()
