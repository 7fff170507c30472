"""python-app: prints the most common words of its input (or a sample)."""
import sys

from textstats import top_words

SAMPLE = "the build ran the tests and the tests passed"

if __name__ == "__main__":
    text = sys.stdin.read() if not sys.stdin.isatty() else SAMPLE
    for word, count in top_words(text or SAMPLE):
        print(f"{count} {word}")
