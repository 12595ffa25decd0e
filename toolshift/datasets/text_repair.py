"""Decode text files that mix UTF-8 and a legacy 8-bit encoding (Mac-Roman or cp1252) line by line.

Hand-edited labelled files (a spreadsheet saved on a Mac, rows pasted from a browser) can hold UTF-8 rows
next to Mac-Roman rows, so neither decoding the whole file as UTF-8 nor as Mac-Roman is right. `decode_mixed`
decodes each line as UTF-8; in a line that is not valid UTF-8 only the invalid bytes are decoded with the
legacy codec that reads most plausibly (typographic quotes and dashes rather than stray accented capitals
inside words), ties going to the codec that wins over the whole file, then to Mac-Roman. Every line is
then checked for mojibake, UTF-8 that was once decoded as Mac-Roman or cp1252 and saved again (``‚Äô`` or
``â€™`` for ``’``, ``√©`` or ``Ã©`` for ``é``): such a run is re-encoded and decoded as UTF-8 when the
result is a Latin, Greek, punctuation or symbol character, so genuine text is left as it is.

`read_text_mixed` is the one entry point for files of human labels (`toolshift.judges.agreement`,
`toolshift.judges.scoring`). The benchmark files of the dataset registry are pinned by sha256 and are UTF-8,
so they are read strictly.
"""

from __future__ import annotations

import codecs
import os
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

LEGACY_CODECS: tuple[str, ...] = ("mac_roman", "cp1252")
"""The legacy codecs tried for bytes that are not UTF-8, in tie-break order."""

_PLAUSIBLE = set("’‘“”–—…•€™°©®«»")
_HANDLER = "toolshift-legacy-{}"


@dataclass
class DecodeReport:
    """How `decode_mixed` decoded a file, line by line."""

    lines: int = 0
    utf8_lines: int = 0
    """Lines with non-ASCII text that decoded as UTF-8."""
    legacy_lines: Counter[str] = field(default_factory=Counter)
    """Legacy codec -> lines in which some bytes were decoded with it."""
    repaired_lines: int = 0
    """Lines in which a mojibake run was repaired."""

    @property
    def encoding(self) -> str:
        """``utf-8``, a legacy codec name, or a ``+``-joined mix (``utf-8+mac_roman``); ``+mojibake-repaired``
        is appended when runs were repaired. An all-ASCII file is ``utf-8``."""
        parts = (["utf-8"] if self.utf8_lines else []) + sorted(self.legacy_lines)
        text = "+".join(parts) or "utf-8"
        return text + ("+mojibake-repaired" if self.repaired_lines else "")


def _legacy_char(codec: str, byte: int) -> str:
    try:
        return bytes([byte]).decode(codec)
    except UnicodeDecodeError:  # cp1252's five undefined bytes: Windows maps them to the C1 controls
        return chr(byte)


@cache
def _register(codec: str) -> str:
    """The name of a codecs error handler that decodes invalid UTF-8 bytes with `codec`."""
    table = [_legacy_char(codec, b) for b in range(256)]

    def handler(exc: UnicodeError) -> tuple[str, int]:
        if not isinstance(exc, UnicodeDecodeError):
            raise exc
        return "".join(table[b] for b in exc.object[exc.start : exc.end]), exc.end

    name = _HANDLER.format(codec)
    codecs.register_error(name, handler)
    return name


def plausibility(text: str) -> int:
    """A score of how plausible decoded text is: typographic punctuation counts for it; a non-ASCII capital
    right after a lowercase letter ("donÕt"), a non-ASCII lowercase letter right before a capital ("ìHello"),
    control characters and mathematical or other symbols ("√", "∂") count against it."""
    score = 0
    for i, ch in enumerate(text):
        if ch.isascii():
            continue
        if ch in _PLAUSIBLE:
            score += 2
            continue
        cat = unicodedata.category(ch)
        prev = text[i - 1] if i else ""
        nxt = text[i + 1] if i + 1 < len(text) else ""
        if cat == "Lu" and prev.isalpha() and prev.islower():
            score -= 2
        elif cat == "Ll" and nxt.isalpha() and nxt.isupper():
            score -= 2
        elif cat in ("Cc", "Co", "Cn", "Sm", "So", "Sk"):
            score -= 3
    return score


# --------------------------------------------------------------------------- mojibake


def _accept(ch: str, n_bytes: int) -> bool:
    """Whether a character decoded from an n-byte mojibake run is a plausible repair."""
    cp = ord(ch)
    if n_bytes == 2:
        return 0xA0 <= cp <= 0x17F or 0x370 <= cp <= 0x3FF
    if n_bytes == 3:
        return 0x2000 <= cp <= 0x2BFF or 0xFB00 <= cp <= 0xFB06
    return 0x1F000 <= cp <= 0x1FAFF


@cache
def _mojibake(codec: str) -> tuple[re.Pattern[str], dict[str, int]]:
    """A regex of runs that look like UTF-8 sequences decoded with `codec`, and the char -> byte map."""
    to_byte = {_legacy_char(codec, b): b for b in range(0x80, 0x100)}

    def cls(lo: int, hi: int) -> str:
        return "[" + "".join(re.escape(_legacy_char(codec, b)) for b in range(lo, hi + 1)) + "]"

    cont = cls(0x80, 0xBF)
    pattern = f"{cls(0xC2, 0xDF)}{cont}|{cls(0xE0, 0xEF)}{cont}{{2}}|{cls(0xF0, 0xF4)}{cont}{{3}}"
    return re.compile(pattern), to_byte


def repair_mojibake(text: str, codecs_: tuple[str, ...] = LEGACY_CODECS) -> str:
    """`text` with runs of UTF-8-decoded-as-`codec` mojibake replaced by what they encode (see module doc)."""
    for codec in codecs_:
        pattern, to_byte = _mojibake(codec)

        def fix(m: re.Match[str], to_byte: dict[str, int] = to_byte) -> str:
            run = m.group(0)
            try:
                ch = bytes(to_byte[c] for c in run).decode("utf-8")
            except (KeyError, UnicodeDecodeError):
                return run
            return ch if len(ch) == 1 and _accept(ch, len(run)) else run

        text = pattern.sub(fix, text)
    return text


# --------------------------------------------------------------------------- files


def decode_mixed(raw: bytes, codecs_: tuple[str, ...] = LEGACY_CODECS) -> tuple[str, DecodeReport]:
    """(text, report) of bytes that may mix UTF-8 lines with legacy-encoded lines (see the module doc).

    A leading UTF-8 byte-order mark is dropped; line endings are kept as they are.
    """
    if raw.startswith(codecs.BOM_UTF8):
        raw = raw[len(codecs.BOM_UTF8) :]
    report = DecodeReport()
    lines = raw.splitlines(keepends=True)
    report.lines = len(lines)
    decoded: list[str | None] = []
    pending: dict[int, dict[str, tuple[str, int]]] = {}
    totals: Counter[str] = Counter()
    for i, line in enumerate(lines):
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            options: dict[str, tuple[str, int]] = {}
            for codec in codecs_:
                text = line.decode("utf-8", errors=_register(codec))
                options[codec] = (text, plausibility(text))
                totals[codec] += options[codec][1]
            pending[i] = options
            decoded.append(None)
            continue
        if not line.isascii():
            report.utf8_lines += 1
        decoded.append(text)
    order = sorted(codecs_, key=lambda c: (-totals[c], codecs_.index(c)))
    for i, options in pending.items():
        best = max(order, key=lambda c: (options[c][1], -order.index(c)))
        decoded[i] = options[best][0]
        report.legacy_lines[best] += 1
    out: list[str] = []
    for text in decoded:
        assert text is not None
        fixed = repair_mojibake(text, codecs_)
        report.repaired_lines += fixed != text
        out.append(fixed)
    return "".join(out), report


def read_text_mixed(path: str | os.PathLike[str]) -> tuple[str, DecodeReport]:
    """(text, report) of a file decoded by `decode_mixed`."""
    return decode_mixed(Path(path).read_bytes())
