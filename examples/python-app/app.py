"""python-app: prints the most common words of its input (or a sample)."""
import sys

import idna
from textstats import top_words, weekday

SAMPLE = "the build ran the tests and the tests passed"

if __name__ == "__main__":
    text = sys.stdin.read() if not sys.stdin.isatty() else SAMPLE
    for word, count in top_words(text or SAMPLE):
        print(f"{count} {word}")
    print("built on a", weekday("2026-12-03"), "for", idna.encode("bücher.example").decode())
