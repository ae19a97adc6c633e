"""What counts as an empty text: no visible character, not just no character.

A query or target made only of zero-width characters (U+200B, U+200D), a byte-order mark (U+FEFF), control
characters or Hangul / Braille blanks looks empty to a person but not to ``str.strip``; the tokenizer turns it
into special tokens only (or ``[UNK]``), and the ranking it gets is noise. Such texts are rejected like "".
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence

#: Unicode categories that draw nothing: controls, format characters (zero-width, BOM, bidi marks),
#: separators, surrogates, and nonspacing marks on their own (variation selectors, lone combining marks).
_INVISIBLE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zs", "Zl", "Zp", "Mn"})
#: Letters by category that render as blank space.
_BLANK_LETTERS = frozenset("\u115f\u1160\u3164\uffa0\u2800")


def is_blank(text: str) -> bool:
    """True when ``text`` has no visible character.

    >>> is_blank("  \\u200b\\u200d "), is_blank("\\ufeff"), is_blank("\\u3164"), is_blank("c\\u200b++")
    (True, True, True, False)
    """
    return not any(
        not ch.isspace() and ch not in _BLANK_LETTERS and unicodedata.category(ch) not in _INVISIBLE_CATEGORIES
        for ch in text
    )


def check_texts(texts: Sequence[str], what: str) -> list[str]:
    """``texts`` as a list, each a non-blank ``str`` (else a TypeError / ValueError naming ``what[i]``)."""
    if isinstance(texts, str):
        raise TypeError(f"{what} must be a list of strings, not a single string")
    texts = list(texts)
    if not texts:
        raise ValueError(f"empty {what} list: nothing to rank")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"{what}[{i}] is {type(text).__name__}, expected str")
        if is_blank(text):
            detail = "" if not text.strip() else f" (only invisible characters: {text!r})"
            raise ValueError(f"{what}[{i}] is an empty text{detail}")
    return texts
