"""What counts as an empty text: no visible character, not just no character.

A query or target made only of zero-width characters (U+200B, U+200D), a byte-order mark (U+FEFF), control
characters or Hangul / Braille blanks looks empty to a person but not to ``str.strip``; the tokenizer turns it
into special tokens only (or ``[UNK]``), and the ranking it gets is noise. Such texts are rejected like "".
"""

from __future__ import annotations

import unicodedata

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
