#!/usr/bin/env python3
"""Writes a deterministic mixed-length corpus (one passage per line) for the benchmarks:
lengths spread from a few words to well past 256 tokens, like a real RAG table.

    python3 benches/make_corpus.py benches/corpus.txt [N=1000]
"""
import random
import sys

WORDS = ("the of and to in a is that for it as was with be by on not he this are or his from at which "
         "but have an they you were her all she there would their we him been has when who will more no "
         "if out so said what up its about into than them can only other new some could time these two may "
         "then do first any my now such like our over man me even most made after also did many before must "
         "through back years where much your way well down should because each just those people how too "
         "database embedding vector retrieval query index postgres transformer model token attention layer "
         "capital france paris berlin science history music football cooking recipe planet galaxy").split()


def main():
    out = sys.argv[1]
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 1000
    rng = random.Random(1234)
    with open(out, "w") as f:
        for i in range(n):
            # Log-uniform lengths: many short passages, a long tail beyond max_seq_length.
            words = int(round(2 ** rng.uniform(2, 8.5)))
            sentence = " ".join(rng.choice(WORDS) for _ in range(words))
            f.write(sentence.capitalize() + ".\n")


if __name__ == "__main__":
    main()
