#!/usr/bin/env python3
"""Builds two tiny random-weight cross-encoders (rerankers) and their goldens:

    python3 scripts/goldens/make_reranker_goldens.py [MODELS_DIR] [GOLDENS_JSON]

MODELS_DIR (default engine/tests/models) receives, saved by transformers' save_pretrained as
published rerankers are:
  - tiny-reranker-bert: BertForSequenceClassification, one label (bge-reranker's BERT-era
    layout: bert.* encoder and pooler, classifier), with an uncased WordPiece tokenizer trained
    here on the golden corpus, 512 positions, two token types;
  - tiny-reranker-xlmr: XLMRobertaForSequenceClassification, one label (bge-reranker-base,
    -large, -v2-m3: roberta.* encoder, classifier.dense and classifier.out_proj), with
    tiny-bge-m3's Unigram tokenizer, 514 positions, one token type.

GOLDENS_JSON (default engine/tests/goldens/rerankers.json) holds, per model and pair:
  - the pair's token ids and token types exactly as FlagReranker.compute_score builds them
    (max_length 512): the query's tokens without special tokens cut to max_length * 3 // 4,
    the passage's to max_length, then FlagEmbedding's own prepare_for_model_compat, which under
    transformers 5 decodes the cut ids and tokenises the text pair again with truncation of the
    passage only (a passage that decodes to "" leaves the query alone);
  - `score`: the model's logit for those ids (transformers, fp32), and `flag_reranker`: what
    FlagReranker returned (the same within 1e-5, asserted);
  - for pairs CrossEncoder tokenises alike (no truncation, a passage with tokens),
    sentence-transformers' CrossEncoder.predict with an identity activation (the raw logit).
Long queries and long passages are among the pairs, so the truncation rule is tested.

Needs (CPU is enough): python3 -m pip install torch transformers sentence-transformers
tokenizers, and FlagEmbedding without its dependencies (python3 -m pip install --no-deps
FlagEmbedding; see make_m3_goldens.py). The models and goldens are committed; tests and CI
never need PyTorch. After regenerating, regenerate the SQL goldens too:

    python3 scripts/goldens/make_reranker_sql.py engine/tests/goldens/rerankers.json tests/pg_regress/sql/rerank_goldens.sql
"""
import json
import os
import random
import shutil
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path[:0] = [HERE]
from golden_texts import TEXTS  # noqa: E402
from make_m3_goldens import corpus, load_flag_embedding, r, randomise  # noqa: E402

# Head dimension 32: the smallest the CUDA attention kernels take, so the GPU path runs them too.
HIDDEN, LAYERS, HEADS, INTERMEDIATE = 64, 2, 2, 128
MAX_LENGTH = 512


def build_bert():
    from tokenizers import BertWordPieceTokenizer
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    wp = BertWordPieceTokenizer(lowercase=True, strip_accents=True)
    wp.train_from_iterator(corpus(), vocab_size=700, min_frequency=1, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
    tokenizer = BertTokenizerFast(tokenizer_object=wp._tokenizer, do_lower_case=True, unk_token="[UNK]", sep_token="[SEP]", pad_token="[PAD]",
                                  cls_token="[CLS]", mask_token="[MASK]", model_max_length=MAX_LENGTH)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                        intermediate_size=INTERMEDIATE, max_position_embeddings=MAX_LENGTH, type_vocab_size=2, num_labels=1,
                        architectures=["BertForSequenceClassification"])
    model = BertForSequenceClassification(config)
    randomise(model, 31)
    return model, tokenizer


def build_xlmr():
    from transformers import AutoTokenizer, XLMRobertaConfig, XLMRobertaForSequenceClassification

    tokenizer = AutoTokenizer.from_pretrained(os.path.join(ROOT, "engine/tests/models/tiny-bge-m3"), model_max_length=MAX_LENGTH)
    config = XLMRobertaConfig(vocab_size=len(tokenizer), hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                              intermediate_size=INTERMEDIATE, max_position_embeddings=MAX_LENGTH + 2, type_vocab_size=1,
                              pad_token_id=1, bos_token_id=0, eos_token_id=2, num_labels=1,
                              architectures=["XLMRobertaForSequenceClassification"])
    model = XLMRobertaForSequenceClassification(config)
    randomise(model, 32)
    return model, tokenizer


def save(model, tokenizer, model_dir):
    if os.path.exists(model_dir):
        shutil.rmtree(model_dir)
    model.eval()
    model.save_pretrained(model_dir, safe_serialization=True)
    tokenizer.save_pretrained(model_dir)


def long_text(tokenizer, target, seed):
    """About `target` tokens of corpus sentences."""
    rng = random.Random(seed)
    sents = corpus()
    parts, n = [], 0
    while n < target:
        s = rng.choice(sents)
        n += len(tokenizer(s, add_special_tokens=False)["input_ids"])
        parts.append(s)
    return " ".join(parts)


def pairs_for(tokenizer):
    texts = [t for t in TEXTS if t.strip()][:24]
    queries = ["what is the capital of France?", "Paris", "capitale de la France", "北京是哪个国家的首都？", "a"]
    passages = texts + ["", "   "]
    pairs = [(q, p) for q in queries[:2] for p in passages]
    pairs += [(q, "Paris is the capital of France.") for q in queries[2:]]
    # Long queries (cut at 384 tokens) and long passages (cut to fit what the query leaves).
    long_q, long_p = long_text(tokenizer, 450, 1), long_text(tokenizer, 900, 2)
    pairs += [
        (long_q, "Paris is the capital of France."),
        ("what is the capital of France?", long_p),
        (long_q, long_p),
        (long_text(tokenizer, 380, 3), long_text(tokenizer, 200, 4)),
        (long_text(tokenizer, 120, 5), long_text(tokenizer, 395, 6)),
    ]
    return pairs


def flag_inputs(tokenizer, query, passage):
    """The pair's ids and token types as FlagReranker.compute_score builds them: its own
    tokenizer calls and FlagEmbedding's prepare_for_model_compat (under transformers 5 that
    decodes the cut ids and tokenises the text pair again)."""
    from FlagEmbedding.utils.tokenizer_compat import prepare_for_model_compat

    q = tokenizer([query], add_special_tokens=False, max_length=MAX_LENGTH * 3 // 4, truncation=True)["input_ids"][0]
    p = tokenizer([passage], add_special_tokens=False, max_length=MAX_LENGTH, truncation=True)["input_ids"][0]
    item = prepare_for_model_compat(tokenizer, q, p, truncation="only_second", max_length=MAX_LENGTH, padding=False)
    ids = list(item["input_ids"])
    types = list(item.get("token_type_ids") or [0] * len(ids))
    return ids, types


def goldens(name, model_dir, FlagReranker, CrossEncoder):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    pairs = pairs_for(tokenizer)
    flag = FlagReranker(model_dir, use_fp16=False, devices=["cpu"], max_length=MAX_LENGTH)
    flag_scores = flag.compute_score([list(p) for p in pairs], batch_size=8)
    cross = CrossEncoder(model_dir, device="cpu", max_length=MAX_LENGTH, activation_fn=torch.nn.Identity())
    out = []
    for (query, passage), flag_score in zip(pairs, flag_scores):
        ids, types = flag_inputs(tokenizer, query, passage)
        with torch.no_grad():
            score = model(input_ids=torch.tensor([ids]), token_type_ids=torch.tensor([types])).logits.view(-1)[0].item()
        # These ids are FlagReranker's input: the same score, up to its batching with padding.
        assert abs(score - flag_score) < 1e-5, (name, query[:40], passage[:40], score, flag_score)
        entry = {"query": query, "passage": passage, "ids": ids, "type_ids": types, "score": r(score), "flag_reranker": r(flag_score)}
        # CrossEncoder truncates both texts (longest first) and joins an empty passage too.
        if tokenizer([query], [passage])["input_ids"][0] == ids:
            entry["cross_encoder"] = r(float(cross.predict([(query, passage)])[0]))
        out.append(entry)
    return {"max_length": MAX_LENGTH, "pairs": out}


def main():
    models_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "engine/tests/models")
    out_path = sys.argv[2] if len(sys.argv) > 2 else os.path.join(ROOT, "engine/tests/goldens/rerankers.json")
    torch.manual_seed(0)
    _, _ = load_flag_embedding()
    from FlagEmbedding import FlagReranker
    from sentence_transformers import CrossEncoder

    result = {}
    for name, build in [("tiny-reranker-bert", build_bert), ("tiny-reranker-xlmr", build_xlmr)]:
        model_dir = os.path.join(models_dir, name)
        model, tokenizer = build()
        save(model, tokenizer, model_dir)
        result[name] = goldens(name, model_dir, FlagReranker, CrossEncoder)
        print(f"{name}: {len(result[name]['pairs'])} pairs")
    with open(out_path, "w", encoding="utf-8") as f:
        json.dump(result, f, ensure_ascii=False, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
