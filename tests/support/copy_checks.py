"""Copy checks for rendered messages: what a reader notices and a template's author misses.

Each check returns the problems it finds in one visible text, as short descriptions with the
offending snippet. Visible text is the subject, the text part, the SMS body, and the HTML part as
a mail client shows it (tags gone, block elements on their own lines, whitespace collapsed).
"""

from __future__ import annotations

import html
import re
from html.parser import HTMLParser

_BLOCK_TAGS = {"p", "div", "td", "tr", "li", "br", "table", "ul", "ol", "h1", "h2", "h3", "title"}
# Words after "a" that start with a vowel letter but a consonant sound, and after "an" the reverse.
_A_BEFORE_VOWEL_LETTER = re.compile(r"^(uni|use|usu|uti|uk\b|us\b|url|one|eu)", re.I)
_AN_BEFORE_CONSONANT_LETTER = re.compile(r"^(hour|honest|honou?r|heir|[FHLMNRSX][A-Z0-9]+\b)")


class _Visible(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._hidden = 0

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag in ("style", "script", "head"):
            self._hidden += 1
        if tag in _BLOCK_TAGS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("style", "script", "head"):
            self._hidden -= 1
        if tag in _BLOCK_TAGS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._hidden:
            self.parts.append(data)


def visible_html(markup: str) -> str:
    """The HTML part's text as a reader sees it: one line per block, spaces collapsed."""
    parser = _Visible()
    parser.feed(markup)
    lines = (re.sub(r"\s+", " ", line).strip() for line in html.unescape("".join(parser.parts)).split("\n"))
    return "\n".join(line for line in lines if line)


def _snippet(text: str, start: int, end: int) -> str:
    return repr(text[max(start - 25, 0) : end + 25])


def spacing_and_punctuation(text: str) -> list[str]:
    """Doubled spaces inside a line, space before punctuation, doubled or stray punctuation."""
    problems = []
    for pattern, what in (
        (r"(?<=\S) {2,}(?=\S)", "doubled space"),
        (r" [,.;:!?](?![\w.])", "space before punctuation"),
        (r"[,;:] ?[,.;:!?]|(?<!\.)\.\.(?!\.)|[!?] ?[.,]", "doubled punctuation"),
        (r"\(\s*\)", "empty brackets"),
    ):
        problems += [f"{what}: {_snippet(text, m.start(), m.end())}" for m in re.finditer(pattern, text)]
    return problems


def articles(text: str) -> list[str]:
    """``a`` before a vowel sound, ``an`` before a consonant sound."""
    problems = []
    for m in re.finditer(r"\b(a|an|A|An) +([A-Za-z][\w-]*)", text):
        article, word = m.group(1).lower(), m.group(2)
        vowel = word[0].lower() in "aeiou"
        if article == "a" and vowel and not _A_BEFORE_VOWEL_LETTER.match(word):
            problems.append(f"'a' before a vowel sound: {_snippet(text, m.start(), m.end())}")
        if article == "an" and not vowel and not _AN_BEFORE_CONSONANT_LETTER.match(word):
            problems.append(f"'an' before a consonant sound: {_snippet(text, m.start(), m.end())}")
    return problems


def empty_sentences(text: str) -> list[str]:
    """A sentence or clause whose variable part came out empty: "for a .", ". .", a line of punctuation."""
    problems = []
    for pattern in (r"\b(a|an|the|your|our)\s*[.,;:!?](?!\w)", r"[.!?]\s+[.,;:!?]", r"(?m)^\s*[,.;:!?]"):
        problems += [f"empty sentence: {_snippet(text, m.start(), m.end())}" for m in re.finditer(pattern, text)]
    return problems


def glued(text: str, values: list[str]) -> list[str]:
    """A value that ran into the word before or after it (a template's line end eaten by a block tag)."""
    problems = []
    for value in values:
        for m in re.finditer(re.escape(value), text, re.I):
            before = text[m.start() - 1] if m.start() else " "
            after = text[m.end()] if m.end() < len(text) else " "
            if before.isalnum() or after.isalnum():
                problems.append(f"{value!r} glued to a neighbour: {_snippet(text, m.start(), m.end())}")
    return problems


def copy_problems(text: str, sentinels: list[str] = ()) -> list[str]:
    """Every copy problem in one visible text."""
    return [
        *spacing_and_punctuation(text),
        *articles(text),
        *empty_sentences(text),
        *glued(text, list(sentinels)),
    ]
