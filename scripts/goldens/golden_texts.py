"""Texts the goldens cover, and the CLS-pooling max_seq_length-512 variant of a model directory.
Shared by make_goldens.py and the SQL test generator so both use the same inputs."""
import json
import os
import shutil

LOREM = ("The quick brown fox jumps over the lazy dog while the committee debates quarterly "
         "infrastructure budgets, vector databases, and retrieval-augmented generation. ")

TEXTS = [
    "",
    " ",
    "\t\n  \r\n",
    "Paris is the capital of France.",
    "paris IS the CAPITAL of france",
    "a",
    "?",
    "Crème brûlée, façade, naïve café, São Paulo, Ångström, Straße.",
    "Ελληνικά: η γρήγορη καφέ αλεπού.",
    "Русский текст: быстрая коричневая лиса прыгает через ленивую собаку.",
    "北京是中华人民共和国的首都。",
    "東京は日本の首都です。ひらがなとカタカナ。",
    "서울은 대한민국의 수도입니다.",
    "العربية: القاهرة هي عاصمة مصر.",
    "עברית: ירושלים",
    "हिन्दी: नई दिल्ली भारत की राजधानी है।",
    "Emoji 🚀🔥 test 👩‍👩‍👧‍👦 with flags 🇫🇷🇯🇵 and ❤️",
    "def embed(text: str) -> list[float]:\n    return model.encode(text).tolist()  # TODO",
    "SELECT id FROM docs ORDER BY emb <=> bge_embed('query') LIMIT 5;",
    '{"key": [1, 2.5e-3, null, true], "nested": {"a": "b"}}',
    "<html><body><p class=\"x\">Hello &amp; welcome</p></body></html>",
    "https://example.com/path?query=1&lang=en#section user@example.org",
    "3.14159 2,718 1e-9 0x1F 1_000_000 -42 +7 ½ ⅓ ∑ ∫ √2 ≤ ≥ ≠",
    "!!!???...,,,;;;:::---___***",
    "Supercalifragilisticexpialidocious" * 8,
    "zero\u200bwidth\u200djoiner and soft\u00adhyphen and nbsp\u00a0here",
    "control\x01chars\x07in\x1ftext",
    "Mixed 中文 and English and Русский in одной sentence 😀.",
    "    leading and trailing spaces    ",
    "UPPER CASE SHOUTING ABOUT THE WEATHER IN NEW YORK CITY",
    "don't won't can't it's o'clock rock'n'roll",
    LOREM * 12,
    " ".join(f"token{i}" for i in range(700)),
    "\n".join(["line"] * 300),
]


def make_cls512_variant(src, dest_root):
    """A copy of the model directory with CLS pooling and max_seq_length 512 (large files linked)."""
    dest = os.path.join(dest_root, os.path.basename(os.path.normpath(src)) + "-cls512")
    os.makedirs(os.path.join(dest, "1_Pooling"), exist_ok=True)
    for name in os.listdir(src):
        path = os.path.join(src, name)
        if os.path.isfile(path) and not os.path.exists(os.path.join(dest, name)):
            os.symlink(os.path.abspath(path), os.path.join(dest, name))
    with open(os.path.join(src, "1_Pooling", "config.json")) as f:
        pooling = json.load(f)
    pooling.update(pooling_mode_cls_token=True, pooling_mode_mean_tokens=False)
    with open(os.path.join(dest, "1_Pooling", "config.json"), "w") as f:
        json.dump(pooling, f, indent=2)
    with open(os.path.join(src, "sentence_bert_config.json")) as f:
        sbert = json.load(f)
    sbert["max_seq_length"] = 512
    os.remove(os.path.join(dest, "sentence_bert_config.json"))
    with open(os.path.join(dest, "sentence_bert_config.json"), "w") as f:
        json.dump(sbert, f, indent=2)
    return dest
