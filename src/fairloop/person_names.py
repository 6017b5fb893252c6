"""People's names as typed into a review form: when two of them are the same person.

The review form's ``reviewer`` field is free text, and separation of duties and a policy's
reviewer list compare it with other names. Names that print alike must compare equal, or a
requester approves their own run as 'root' + a zero-width space, full-width 'ｒｏｏｔ' or
'rооt' with Cyrillic 'о'. So names are compared by ``name_key``: NFKC (full-width and other
compatibility forms become plain letters), format characters removed (Unicode category Cf:
zero-width spaces and joiners, bidi controls, soft hyphens), Cyrillic and Greek letters that
look like Latin ones folded to those, case-folded, blanks collapsed. And ``name_problem``
refuses a name whose letters mix scripts (Latin with Cyrillic, ...): the fold table cannot list
every look-alike, and no one's name needs two scripts in it.
"""

from __future__ import annotations

import unicodedata

# Cyrillic and Greek letters drawn like Latin ones (upper and lower case), after Unicode's
# confusables list (TR39): a whole name in them must still equal the Latin name it imitates.
LOOK_ALIKES = str.maketrans(
    "АВЕЅІЈКМНОРСТХУԚԜаеіјорсѕхуһԁԛԝԍ" "ΑΒΕΖΗΙΚΜΝΟΡΤΥΧοαικνρυχϲϳ",
    "ABESIJKMHOPCTXYQWaeijopcsxyhdqwg" "ABEZHIKMNOPTYXoaikvpuxcj",
)
# Scripts written together in one name: Japanese mixes Han, Hiragana and Katakana; Korean Hangul and Han.
SCRIPT_FAMILIES = {"HIRAGANA": "CJK", "KATAKANA": "CJK", "KATAKANA-HIRAGANA": "CJK", "HANGUL": "CJK",
                   "IDEOGRAPHIC": "CJK"}


def _visible(name: str) -> str:
    """NFKC without format characters: what the name looks like, letter by letter."""
    text = unicodedata.normalize("NFKC", name)
    return "".join(ch for ch in text if unicodedata.category(ch) != "Cf")


def name_key(name: str) -> str:
    """The form in which names of one person are equal (see the module's doc)."""
    folded = _visible(name).translate(LOOK_ALIKES).casefold()
    return " ".join(unicodedata.normalize("NFKC", folded).split())


def _script(letter: str) -> str:
    script = unicodedata.name(letter, "UNKNOWN").split(" ")[0]
    return SCRIPT_FAMILIES.get(script, script)


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot name a person (None: it can): blank once normalised, or letters of mixed scripts."""
    visible = _visible(name)
    if not name_key(visible):
        return "a reviewer name is required"
    scripts = sorted({_script(ch) for ch in visible if unicodedata.category(ch) in ("Lu", "Ll", "Lt", "Lo")})
    if len(scripts) > 1:
        return (f"the name {name!r} mixes {' and '.join(s.title() for s in scripts)} letters (look-alike characters): "
                "type it in one script")
    return None
