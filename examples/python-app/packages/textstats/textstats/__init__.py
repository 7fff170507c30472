"""Word statistics for the python-app example."""
import collections

from dateutil import parser


def top_words(text, n=3):
    """Return the n most common words of text, lower-cased."""
    words = [w.strip(".,;:!?").lower() for w in text.split()]
    return collections.Counter(w for w in words if w).most_common(n)


def weekday(date):
    """Return the weekday of a date written in any common form."""
    return parser.parse(date).strftime("%A")
