#!/usr/bin/env python3
"""Builds the tiny random-weight BGE-M3-shaped test model and its goldens:

    python3 scripts/goldens/make_m3_goldens.py [MODEL_DIR] [GOLDENS_JSON]

MODEL_DIR (default engine/tests/models/tiny-bge-m3) receives a sentence-transformers directory
laid out as the published bge-m3: an XLM-RoBERTa encoder (2 layers, hidden 32, 4 heads,
max_position_embeddings 8194, one token type) with random weights, a SentencePiece-style
Unigram tokenizer.json trained here with the `tokenizers` library on a few hundred sentences
(XLM-R's special tokens <s> <pad> </s> <unk> ... <mask>, post-processor <s> A </s>), CLS
pooling + Normalize, a `prompts` entry, and the two M3 heads as PyTorch pickles
(sparse_linear.pt: Linear(32, 1), colbert_linear.pt: Linear(32, 32)) plus their safetensors
conversions made by scripts/models/convert_m3_heads.py, exactly as scripts/models/fetch.sh does for
the real model.

GOLDENS_JSON (default engine/tests/goldens/tiny-bge-m3.json) holds, for golden_texts.TEXTS plus
texts aimed at XLM-R (literal special tokens, unknown characters, a ~7000-token document):
  - token ids, dense embeddings and query embeddings from sentence-transformers
    (SentenceTransformer.encode / encode_query);
  - sparse lexical weights and ColBERT vectors from FlagEmbedding's BGE-M3 code
    (BGEM3FlagModel.encode, convert_id_to_token), fp32 on the CPU;
  - dense and query embeddings for two copies of the directory whose
    config_sentence_transformers.json sets default_prompt_name, to pin how prompts resolve.

Needs (CPU is enough): python3 -m pip install sentence-transformers torch transformers tokenizers
safetensors sentencepiece (only for its nmt_nfkc normalisation table), and FlagEmbedding installed without its dependencies
(python3 -m pip install --no-deps FlagEmbedding). FlagEmbedding's package __init__ also imports
its fine-tuning and LLM-reranker code, which needs `datasets` and `peft`; inference never
touches them, so this script registers empty stand-in modules for those two names instead of
installing them. The sparse and ColBERT numbers are FlagEmbedding's own code paths.

The model directory and goldens are committed; tests and CI never need PyTorch. After
regenerating them, regenerate the SQL goldens too and review tests/pg_regress/expected/m3*.out:

    python3 scripts/goldens/make_m3_sql.py engine/tests/goldens/tiny-bge-m3.json tests/pg_regress/sql/m3_goldens.sql
"""
import importlib.machinery
import json
import os
import random
import shutil
import sys
import types

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path[:0] = [HERE, os.path.join(os.path.dirname(HERE), "models")]
from golden_texts import TEXTS  # noqa: E402

MODEL_NAME = "tiny-bge-m3"
HIDDEN, LAYERS, HEADS, INTERMEDIATE = 32, 2, 4, 64
MAX_POSITIONS = 8194  # bge-m3's: 8192 tokens + pad_token_id (1) + 1
VOCAB_TARGET = 1000
QUERY_PROMPT = "Represent this query for retrieval: "

# Texts that exercise what differs from BERT: special tokens typed into the text (a literal
# <pad> takes position padding_idx and does not advance the count), characters the tiny
# vocabulary lacks (<unk>, dropped from sparse output), repeated tokens (sparse keeps the max),
# and pieces that decode to the same string with and without the word-start marker.
M3_TEXTS = [
    "a <pad> in the middle <pad> <pad> of the text",
    "<s> literal </s> markers <unk> and a <mask> token",
    "the the the the the the",
    "bathe the other theatre; then there, the three thermoses",
    "ჯორჯია ᚠᛇᚻ ሰላም ไทย unknown scripts",
    "query: what is the capital of France?",
    "NFKC: ﬁne ＦＵＬＬＷＩＤＴＨ ① x²  and   runs    of spaces",
]

# (query, passage) pairs whose ColBERT and lexical scores the goldens keep; -1 is the long text.
SCORED_PAIRS = [
    ("query: what is the capital of France?", "Paris is the capital of France."),
    ("query: what is the capital of France?", "paris IS the CAPITAL of france"),
    ("Paris is the capital of France.", "Crème brûlée, façade, naïve café, São Paulo, Ångström, Straße."),
    ("the the the the the the", "bathe the other theatre; then there, the three thermoses"),
    ("query: what is the capital of France?", -1),
]

FIRST_WORDS = ["The", "A", "Every", "Our", "This", "That", "Some", "No", "Each", "One"]
NOUNS = ["database", "river", "engineer", "city", "model", "vector", "query", "passage", "teacher",
         "garden", "library", "network", "window", "mountain", "server", "student", "market",
         "question", "answer", "document", "embedding", "index", "table", "capital", "country"]
VERBS = ["stores", "crosses", "builds", "ranks", "returns", "explains", "visits", "computes",
         "searches", "describes", "follows", "measures", "finds", "writes", "reads"]
ADJECTIVES = ["quick", "lazy", "bright", "quiet", "large", "small", "ancient", "modern", "sparse",
              "dense", "long", "short", "green", "cold", "warm"]
FOREIGN = [
    "Paris est la capitale de la France et une ville magnifique.",
    "Berlin ist die Hauptstadt von Deutschland und sehr groß.",
    "Madrid es la capital de España y tiene muchos museos.",
    "Roma è la capitale d'Italia ed è molto antica.",
    "Москва является столицей России и большим городом.",
    "Αθήνα είναι η πρωτεύουσα της Ελλάδας.",
    "北京是中国的首都，也是一个历史悠久的城市。",
    "東京は日本の首都で、とても大きな都市です。",
    "서울은 한국의 수도이며 큰 도시입니다.",
    "القاهرة هي عاصمة مصر وأكبر مدنها.",
    "ירושלים היא עיר עתיקה.",
    "नई दिल्ली भारत की राजधानी है और बहुत बड़ी है।",
    "Lisboa é a capital de Portugal.",
    "Warszawa jest stolicą Polski.",
    "İstanbul Türkiye'nin en büyük şehridir.",
]


def corpus():
    rng = random.Random(20261121)
    sents = list(TEXTS[:31]) + M3_TEXTS[:4] + FOREIGN * 3
    for _ in range(400):
        sents.append(
            f"{rng.choice(FIRST_WORDS)} {rng.choice(ADJECTIVES)} {rng.choice(NOUNS)} {rng.choice(VERBS)} "
            f"the {rng.choice(ADJECTIVES)} {rng.choice(NOUNS)}{rng.choice(['.', '!', '?', ','])}"
        )
    return sents


def nmt_nfkc_charsmap():
    """SentencePiece's compiled nmt_nfkc normalisation table (what XLM-R's Precompiled
    normaliser carries). sentencepiece only hands it out inside a trained model, so train a
    throwaway one and read NormalizerSpec.precompiled_charsmap (ModelProto field 3, field 2)
    out of the serialised protobuf."""
    import io

    import sentencepiece

    buf = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(["hello world this is a test", "another line of text here"] * 50),
        model_writer=buf, vocab_size=20, normalization_rule_name="nmt_nfkc", minloglevel=2,
    )

    def fields(b):
        i = 0
        while i < len(b):
            key, i = varint(b, i)
            kind = key & 7
            if kind == 0:
                value, i = varint(b, i)
            elif kind == 2:
                n, i = varint(b, i)
                value, i = b[i : i + n], i + n
            else:
                value, i = None, i + (8 if kind == 1 else 4)
            yield key >> 3, value

    def varint(b, i):
        n = shift = 0
        while True:
            c = b[i]
            i += 1
            n |= (c & 0x7F) << shift
            shift += 7
            if c < 0x80:
                return n, i

    spec = next(v for f, v in fields(buf.getvalue()) if f == 3)
    return next(v for f, v in fields(spec) if f == 2)


def build_tokenizer():
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.Unigram())
    # As XLM-R's tokenizer.json: SentencePiece's precompiled nmt_nfkc normalisation table, then
    # runs of spaces collapsed.
    tok.normalizer = normalizers.Sequence(
        [normalizers.Precompiled(nmt_nfkc_charsmap()), normalizers.Replace(Regex(" {2,}"), " ")]
    )
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")]
    )
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    trainer = trainers.UnigramTrainer(
        vocab_size=VOCAB_TARGET, special_tokens=["<s>", "<pad>", "</s>", "<unk>"], unk_token="<unk>", max_piece_length=12
    )
    tok.train_from_iterator(corpus(), trainer)
    tok.add_special_tokens(["<mask>"])  # last id, as in XLM-R
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=[("<s>", 0), ("</s>", 2)]
    )
    assert [tok.token_to_id(t) for t in ["<s>", "<pad>", "</s>", "<unk>"]] == [0, 1, 2, 3]
    return tok


def randomise(model, seed):
    """Random weights with enough spread that attention is peaked and LayerNorm affine terms
    matter (the default init leaves gamma = 1, beta = 0 and near-uniform attention)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "LayerNorm.weight" in name:
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            elif "embeddings" in name:
                p.copy_(0.5 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(torch.randn(p.shape, generator=g) / p.shape[-1] ** 0.5)


def build_model(model_dir):
    from sentence_transformers import SentenceTransformer, models
    from transformers import XLMRobertaConfig, XLMRobertaModel, XLMRobertaTokenizerFast

    shutil.rmtree(model_dir, ignore_errors=True)
    tmp = model_dir + ".hf"
    shutil.rmtree(tmp, ignore_errors=True)
    tok = build_tokenizer()
    hf_tok = XLMRobertaTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", sep_token="</s>", cls_token="<s>",
        unk_token="<unk>", pad_token="<pad>", mask_token="<mask>", model_max_length=8192,
        clean_up_tokenization_spaces=True,
    )
    config = XLMRobertaConfig(
        vocab_size=tok.get_vocab_size(), hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
        intermediate_size=INTERMEDIATE, max_position_embeddings=MAX_POSITIONS, type_vocab_size=1,
        pad_token_id=1, bos_token_id=0, eos_token_id=2, layer_norm_eps=1e-5, hidden_act="gelu",
        architectures=["XLMRobertaModel"],
    )
    model = XLMRobertaModel(config, add_pooling_layer=False)
    randomise(model, seed=3)
    model.save_pretrained(tmp, safe_serialization=True)
    hf_tok.save_pretrained(tmp)

    transformer = models.Transformer(tmp, max_seq_length=8192)
    pooling = models.Pooling(HIDDEN, pooling_mode="cls")
    st = SentenceTransformer(modules=[transformer, pooling, models.Normalize()], device="cpu",
                             prompts={"query": QUERY_PROMPT})
    st.save(model_dir)
    shutil.rmtree(tmp)
    # transformers' XLMRobertaTokenizer rebuilds its own pipeline and drops the normaliser; the
    # directory gets the tokenizer exactly as trained (as a published tokenizer.json is).
    tok.save(os.path.join(model_dir, "tokenizer.json"))
    write_published_layout(model_dir)

    g = torch.Generator().manual_seed(11)
    sparse = torch.nn.Linear(HIDDEN, 1)
    colbert = torch.nn.Linear(HIDDEN, HIDDEN)
    with torch.no_grad():
        sparse.weight.copy_(0.4 * torch.randn(sparse.weight.shape, generator=g))
        sparse.bias.fill_(0.3)
        colbert.weight.copy_(torch.randn(colbert.weight.shape, generator=g) / HIDDEN**0.5)
        colbert.bias.copy_(0.1 * torch.randn(colbert.bias.shape, generator=g))
    torch.save(sparse.state_dict(), os.path.join(model_dir, "sparse_linear.pt"))
    torch.save(colbert.state_dict(), os.path.join(model_dir, "colbert_linear.pt"))
    from convert_m3_heads import convert

    convert(model_dir)
    # sentence-transformers writes a README model card; the directory does not need it.
    if os.path.exists(os.path.join(model_dir, "README.md")):
        os.remove(os.path.join(model_dir, "README.md"))


def write_published_layout(model_dir):
    """sentence-transformers 6 writes its newer config formats; published BGE directories
    (bge-m3 included) carry the classic ones, which every version reads. Use those."""
    def dump(rel, obj):
        with open(os.path.join(model_dir, rel), "w") as f:
            json.dump(obj, f, indent=2)
            f.write("\n")

    dump("modules.json", [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
    ])
    dump("sentence_bert_config.json", {"max_seq_length": 8192, "do_lower_case": False})
    dump("1_Pooling/config.json", {
        "word_embedding_dimension": HIDDEN, "pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False,
        "pooling_mode_max_tokens": False, "pooling_mode_mean_sqrt_len_tokens": False,
    })


def long_text(tokenizer, target=7000):
    """A document of about `target` tokens, built from the corpus sentences."""
    sents = corpus()
    parts, n, i = [], 2, 0
    while n < target:
        s = sents[i % len(sents)]
        n += len(tokenizer(s, add_special_tokens=False)["input_ids"])
        parts.append(s)
        i += 1
    return " ".join(parts)


def r(x):
    return float(f"{x:.9g}")


def vec(v):
    return [r(x) for x in v]


def colbert_rows(n):
    """Which ColBERT rows the goldens keep: all for short texts, a spread for long ones."""
    if n <= 48:
        return list(range(n))
    keep = set(range(16)) | set(range(n - 16, n)) | set(range(0, n, 97))
    return sorted(keep)


def load_flag_embedding():
    for name in ("datasets", "peft"):
        if name not in sys.modules:
            stub = types.ModuleType(name)
            stub.__spec__ = importlib.machinery.ModuleSpec(name, None)

            def missing(attr, _name=name):
                if attr.startswith("__"):
                    raise AttributeError(attr)
                return type(attr, (), {})

            stub.__getattr__ = missing
            sys.modules[name] = stub
    import FlagEmbedding
    from FlagEmbedding import BGEM3FlagModel

    return FlagEmbedding, BGEM3FlagModel


def with_prompts(model_dir, dest, st_config_update):
    shutil.copytree(model_dir, dest)
    path = os.path.join(dest, "config_sentence_transformers.json")
    cfg = json.load(open(path))
    cfg.update(st_config_update)
    json.dump(cfg, open(path, "w"), indent=2)
    return dest


def goldens(model_dir, texts):
    import sentence_transformers
    import transformers
    from sentence_transformers import SentenceTransformer

    FlagEmbedding, BGEM3FlagModel = load_flag_embedding()
    st = SentenceTransformer(model_dir, device="cpu")
    assert st.max_seq_length == 8192, st.max_seq_length
    ids = [st.tokenize([t])["input_ids"][0].tolist() for t in texts]
    dense = st.encode(texts, batch_size=4, convert_to_numpy=True)
    query = st.encode_query(texts, batch_size=4, convert_to_numpy=True)

    flag = BGEM3FlagModel(model_dir, use_fp16=False, devices="cpu", passage_max_length=8192, batch_size=4)
    out = flag.encode(texts, batch_size=4, max_length=8192, return_dense=True, return_sparse=True, return_colbert_vecs=True)
    flag_ids = [flag.tokenizer(t, truncation=True, max_length=8192)["input_ids"] for t in texts]
    assert flag_ids == ids, "FlagEmbedding and sentence-transformers tokenise differently"
    from tokenizers import Tokenizer

    raw = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
    assert [raw.encode(t).ids for t in texts] == ids, "sentence-transformers does not tokenise as tokenizer.json says"
    cos = [float(torch.nn.functional.cosine_similarity(torch.tensor(a), torch.tensor(b), dim=0)) for a, b in zip(dense, out["dense_vecs"])]
    assert min(cos) > 0.99999, f"FlagEmbedding dense differs from sentence-transformers: {min(cos)}"

    sparse, colbert = [], []
    for lw, cv in zip(out["lexical_weights"], out["colbert_vecs"]):
        by_token = flag.convert_id_to_token(lw)
        sparse.append({
            "ids": [[int(i), r(w)] for i, w in lw.items()],
            "tokens": [[t, r(w)] for t, w in by_token.items()],
        })
        rows = colbert_rows(len(cv))
        colbert.append({"count": len(cv), "rows": {str(i): vec(cv[i]) for i in rows}})
    # Scores between pairs of texts by FlagEmbedding's own functions: ColBERT (late
    # interaction) and lexical matching (the sparse weights' inner product by token id).
    scores = []
    for q, p in SCORED_PAIRS:
        qi = texts.index(q)
        pi = texts.index(p) if isinstance(p, str) else len(texts) + p
        scores.append({
            "query": qi, "passage": pi,
            "colbert": r(float(flag.colbert_score(out["colbert_vecs"][qi], out["colbert_vecs"][pi]))),
            "lexical": r(float(flag.compute_lexical_matching_score(out["lexical_weights"][qi], out["lexical_weights"][pi]))),
        })
    collisions = sum(len(s["ids"]) - len(s["tokens"]) for s in sparse)
    assert collisions > 0, "no text has two token ids that decode to the same string"

    variants = {}
    settings = {
        "default-prompt": {"prompts": {"query": "query: ", "document": "passage: "}, "default_prompt_name": "document"},
        "default-only": {"prompts": {"document": "passage: "}, "default_prompt_name": "document"},
    }
    short = texts[:8]
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        for name, update in settings.items():
            d = with_prompts(model_dir, os.path.join(tmp, name), update)
            m = SentenceTransformer(d, device="cpu")
            variants[name] = {
                "config": update,
                "dense": [vec(v) for v in m.encode(short, convert_to_numpy=True)],
                "query_dense": [vec(v) for v in m.encode_query(short, convert_to_numpy=True)],
            }

    return {
        "generator": (
            f"sentence-transformers {sentence_transformers.__version__}, FlagEmbedding {getattr(FlagEmbedding, '__version__', '1.4.2')}, "
            f"transformers {transformers.__version__}, torch {torch.__version__}"
        ),
        "model": MODEL_NAME,
        "max_seq_length": st.max_seq_length,
        "query_prompt": QUERY_PROMPT,
        "sparse_collisions": collisions,
        "texts": texts,
        "token_ids": ids,
        "dense": [vec(v) for v in dense],
        "query_dense": [vec(v) for v in query],
        "sparse": sparse,
        "colbert": colbert,
        "scores": scores,
        "prompt_variants": variants,
    }


def main():
    model_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "engine/tests/models", MODEL_NAME)
    out = sys.argv[2] if len(sys.argv) > 2 else os.path.join(ROOT, "engine/tests/goldens", MODEL_NAME + ".json")
    torch.set_num_threads(2)
    torch.manual_seed(0)  # the unused pooler that loading adds is initialised from it
    build_model(model_dir)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    texts = list(TEXTS) + M3_TEXTS + [long_text(tokenizer)]
    golden = goldens(model_dir, texts)
    with open(out, "w") as f:
        json.dump(golden, f, ensure_ascii=False, indent=1)
    size = sum(os.path.getsize(os.path.join(dp, f)) for dp, _, fs in os.walk(model_dir) for f in fs)
    print(f"wrote {model_dir} ({size} bytes) and {out}: {len(texts)} texts, "
          f"longest {max(len(i) for i in golden['token_ids'])} tokens, {golden['sparse_collisions']} sparse key collisions")


if __name__ == "__main__":
    main()
