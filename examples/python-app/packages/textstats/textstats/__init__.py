"""Word statistics for the python-app example."""
import collections

import six


def top_words(text, n=3):
    """Return the n most common words of text, lower-cased."""
    if not isinstance(text, six.string_types):
        raise TypeError("text must be a string")
    words = [w.strip(".,;:!?").lower() for w in text.split()]
    return collections.Counter(w for w in words if w).most_common(n)
