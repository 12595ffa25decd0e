"""The neutral texts of the episodes: `text_prior`'s prior exchanges, and the filler of `image_turn`'s
assistant line and of `text_trail_long`'s padding (no request, no tool, nothing about images)."""

from __future__ import annotations

NEUTRAL_EXCHANGES: tuple[tuple[str, str], ...] = (
    (
        "What is the boiling point of water at sea level?",
        "At sea level, water boils at 100 degrees Celsius, which is 212 degrees Fahrenheit.",
    ),
    (
        "How many days are there in a leap year?",
        "A leap year has 366 days, one more than a common year, because February has 29 days.",
    ),
    (
        "What is the capital city of Australia?",
        "The capital city of Australia is Canberra, which lies in the Australian Capital Territory.",
    ),
    (
        "Which planet is closest to the Sun?",
        "Mercury is the planet closest to the Sun; it completes one orbit in about 88 days.",
    ),
    (
        "How many sides does a hexagon have?",
        "A hexagon has six sides and six corners; a regular hexagon has all sides of equal length.",
    ),
    (
        "What colour do you get by mixing blue and yellow paint?",
        "Mixing blue and yellow paint gives green; more yellow makes it lighter, more blue darker.",
    ),
)
"""The neutral prior exchanges of `text_prior` (question, answer), picked by prompt index modulo 6.
Each is about as long as the tool trail (the tool-call JSON plus the tool turn). `text_prior` controls for
an earlier exchange in the conversation, not for the length of the tool spec: `tool_offered` does that."""

NEUTRAL_TEXT: str = " ".join(answer for _, answer in NEUTRAL_EXCHANGES)
"""Neutral filler (the answers of NEUTRAL_EXCHANGES): `image_turn`'s assistant line and the padding of
`text_trail_long`, cut or repeated to the length the family needs (toolshift.models.token_counts)."""


def neutral_line(n_chars: int) -> str:
    """NEUTRAL_TEXT repeated and cut to `n_chars` characters at a word end (at least one word)."""
    text = NEUTRAL_TEXT
    while len(text) < n_chars:
        text += " " + NEUTRAL_TEXT
    cut = text.rfind(" ", 0, n_chars + 1)
    return text[: cut if cut > 0 else text.find(" ")]
