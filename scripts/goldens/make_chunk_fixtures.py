#!/usr/bin/env python3
"""Token counts for the chunker's tests (engine/tests/chunk.rs), from Hugging Face's own tokenizers:

    python3 scripts/goldens/make_chunk_fixtures.py [MINILM_DIR]     (default: models/all-MiniLM-L6-v2)

Needs `tokenizers` and `transformers` (pip install --user tokenizers transformers); no PyTorch.

Writes:
  - engine/tests/goldens/chunk_bytelevel_tokenizer.json: a small byte-level BPE (GPT-2/Qwen style:
    NFC normaliser, ByteLevel pre-tokenizer with its regex split, a post-processor appending
    <eos>) trained here on the texts below, so the chunker is tested on the third tokenizer
    family too. The test puts it in a copy of engine/tests/models/tiny-qwen3.
  - engine/tests/goldens/chunk_counts.json: texts (multilingual, CJK, emoji, long words, blank
    lines, whitespace, and pieces cut at arbitrary characters as a chunker's edges are) and, per
    model, each text's token count with special tokens, as transformers' tokenizer(text) gives it
    (checked equal to the `tokenizers` library's encode(text, add_special_tokens=True)).
"""
import json
import os
import random
import sys

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from golden_texts import TEXTS  # noqa: E402

GOLDENS = os.path.join(ROOT, "engine/tests/goldens")
BYTELEVEL = os.path.join(GOLDENS, "chunk_bytelevel_tokenizer.json")

WORDS = (
    "the of and retrieval embedding vector database chunk token paragraph sentence model "
    "Crème brûlée façade naïve café São Paulo Ångström Straße Ελληνικά γρήγορη αλεπού "
    "Русский быстрая коричневая лиса прыгает собаку العربية القاهرة عاصمة हिन्दी दिल्ली भारत "
    "서울은 대한민국의 수도입니다 북경 🚀 🔥 👩‍👩‍👧‍👦 🇫🇷 ❤️ x² ½ ﬁne e\u0301 don't "
    "https://example.com/path?q=1 3.14159 [CLS] <s> <bos> </s> Supercalifragilisticexpialidocious"
).split()
CJK = "北京是中华人民共和国的首都。東京は日本の首都です。ひらがなとカタカナ！本当ですか？我们今天讨论向量数据库和文本切分"
SEPARATORS = [" "] * 12 + ["  ", "\n", "\n\n", "\n \n\n", "\t", "\r\n", "\u3000", "\u00a0", ". ", "! ", "? ", "。"]


def random_text(rng, n_words):
    out = []
    for _ in range(n_words):
        r = rng.random()
        if r < 0.1:
            start = rng.randrange(len(CJK))
            out.append(CJK[start:start + rng.randrange(1, 30)])
        elif r < 0.12:
            out.append(rng.choice(WORDS) * rng.randrange(5, 40))
        else:
            out.append(rng.choice(WORDS))
        out.append(rng.choice(SEPARATORS))
    return "".join(out)


def texts():
    rng = random.Random(20261)
    with open(os.path.join(ROOT, "benches/rag_corpus.txt"), encoding="utf-8") as f:
        corpus = [line for line in f.read().split("\n") if line.strip()]
    out = list(TEXTS)
    out += [rng.choice(corpus) for _ in range(6)]
    out += [random_text(rng, rng.randrange(5, 200)) for _ in range(16)]
    out += [CJK * 3, "a" * 700, "é" * 300, "🚀" * 100, "\n\n\n\n" * 20, " \t \u3000 ", "word " * 150]
    # Pieces cut at arbitrary characters, as a chunker's cuts inside long words and CJK are.
    long_text = random_text(rng, 400) + CJK * 4
    for _ in range(16):
        a = rng.randrange(len(long_text))
        out.append(long_text[a:a + rng.randrange(1, 300)])
    return out


def train_bytelevel(corpus):
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=760,
        special_tokens=["<pad>", "<eos>", "<bos>", "<unk>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="$A <eos>", pair="$A <eos> $B <eos>", special_tokens=[("<eos>", tok.token_to_id("<eos>"))]
    )
    return tok


def counts(tokenizer_file, model_dir, all_texts):
    raw = Tokenizer.from_file(tokenizer_file)
    raw.no_padding()
    raw.no_truncation()
    if model_dir is not None:
        hf = AutoTokenizer.from_pretrained(model_dir)
    else:
        hf = PreTrainedTokenizerFast(tokenizer_file=tokenizer_file)
    out = []
    for t in all_texts:
        n = len(hf(t)["input_ids"])
        assert n == len(raw.encode(t, add_special_tokens=True).ids), (tokenizer_file, t)
        out.append(n)
    return out


def main():
    minilm = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "models/all-MiniLM-L6-v2")
    all_texts = texts()
    with open(os.path.join(ROOT, "benches/rag_corpus.txt"), encoding="utf-8") as f:
        training = f.read().split("\n")[:400] + all_texts
    train_bytelevel(training).save(BYTELEVEL)
    m3 = os.path.join(ROOT, "engine/tests/models/tiny-bge-m3")
    qwen = os.path.join(ROOT, "engine/tests/models/tiny-qwen3")
    fixture = {
        "texts": all_texts,
        "counts": {
            "all-MiniLM-L6-v2": counts(os.path.join(minilm, "tokenizer.json"), minilm, all_texts),
            "tiny-bge-m3": counts(os.path.join(m3, "tokenizer.json"), m3, all_texts),
            "tiny-qwen3": counts(os.path.join(qwen, "tokenizer.json"), qwen, all_texts),
            "tiny-qwen3-bytelevel": counts(BYTELEVEL, None, all_texts),
        },
    }
    with open(os.path.join(GOLDENS, "chunk_counts.json"), "w", encoding="utf-8") as f:
        json.dump(fixture, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print(f"{len(all_texts)} texts, 4 tokenizers")


if __name__ == "__main__":
    main()
