#!/usr/bin/env python3
"""Writes a corpus of real English passages (one per line) for retrieval tests and the demo:
paragraphs of the Python documentation that ships with the interpreter, offline, with no
third-party packages: the help topics of pydoc_data (the Language Reference's prose) and the
docstrings of the standard library's modules, classes and functions (read with ast, never
imported).

    python3 benches/make_rag_corpus.py benches/rag_corpus.txt [N=2000]

Paragraphs of 12 to 90 words that read as prose are kept (no code examples, grammar rules,
URLs or backslashes, so every line loads unchanged with COPY), duplicates dropped, and N of
them drawn with a fixed seed. The text depends on the Python version; the committed
benches/rag_corpus.txt was made with Python 3.11.7.
"""
import ast
import os
import random
import re
import sys
import sysconfig

from pydoc_data.topics import topics

SKIP_DIRS = ("idlelib", "lib2to3", "site-packages", "dist-packages", "turtledemo", "ensurepip", "pydoc_data")


def prose(paragraph):
    text = " ".join(paragraph.split())
    words = text.split()
    if not 12 <= len(words) <= 90:
        return None
    if any(s in text for s in (">>>", "::=", "http", "\\")):
        return None
    letters = sum(c.isalpha() or c == " " for c in text) / len(text)
    if letters < 0.85 or not text[0].isupper() or not text.endswith((".", ":", ")")):
        return None
    return text


def paragraphs(doc):
    for paragraph in re.split(r"\n\s*\n", doc):
        text = prose(paragraph)
        if text:
            yield text


def stdlib_docstrings(root):
    for directory, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS and not d.startswith(("test", "__")))
        for name in sorted(files):
            if not name.endswith(".py"):
                continue
            try:
                with open(os.path.join(directory, name), encoding="utf-8") as f:
                    tree = ast.parse(f.read())
            except (SyntaxError, UnicodeDecodeError, ValueError):
                continue
            for node in [tree] + [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]:
                doc = ast.get_docstring(node)
                if doc:
                    yield doc


def main():
    out = sys.argv[1]
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 2000
    pool, seen = [], set()
    docs = [topics[k] for k in sorted(topics)] + list(stdlib_docstrings(sysconfig.get_paths()["stdlib"]))
    for doc in docs:
        for text in paragraphs(doc):
            if text not in seen:
                seen.add(text)
                pool.append(text)
    chosen = sorted(random.Random(2026).sample(range(len(pool)), n))
    with open(out, "w", encoding="utf-8") as f:
        for i in chosen:
            f.write(pool[i] + "\n")
    print(f"make_rag_corpus: {n} of {len(pool)} passages in {out}")


if __name__ == "__main__":
    main()
