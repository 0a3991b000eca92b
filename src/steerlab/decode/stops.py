"""Stop strings and the text a stream must hold back until the next token settles it.

Streaming must never send text it later has to take back: a partial UTF-8 character (decoded as U+FFFD)
or the first characters of a stop string stay unsent until the next token shows what they become.
"""

from __future__ import annotations

from collections.abc import Sequence

REPLACEMENT = "\ufffd"


def find_stop(text: str, stops: Sequence[str] | None) -> int | None:
    """Index where the earliest stop string starts in ``text``, or None."""
    hits = [text.find(s) for s in stops or () if s and s in text]
    return min(hits) if hits else None


def held_back(text: str, stops: Sequence[str] | None) -> int:
    """How many trailing characters of ``text`` might still change or become part of a stop string."""
    hold = 0
    for stop in stops or ():
        for k in range(min(len(stop) - 1, len(text)), 0, -1):
            if text.endswith(stop[:k]):
                hold = max(hold, k)
                break
    tail = len(text) - len(text.rstrip(REPLACEMENT))
    return max(hold, tail)
