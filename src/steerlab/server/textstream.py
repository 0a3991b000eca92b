"""Turning a growing list of token ids into text deltas that are safe to send, honouring stop strings.

Streaming must never send text it later has to take back: a partial UTF-8 character (decoded as U+FFFD)
or the first characters of a stop string are held back until the next token settles them.
"""

from __future__ import annotations

from collections.abc import Sequence

REPLACEMENT = "\ufffd"


def find_stop(text: str, stops: Sequence[str]) -> int | None:
    """Index where the earliest stop string starts in ``text``, or None."""
    hits = [text.find(s) for s in stops if s and s in text]
    return min(hits) if hits else None


def held_back(text: str, stops: Sequence[str]) -> int:
    """How many trailing characters of ``text`` might still change or become part of a stop string."""
    hold = 0
    for stop in stops:
        for k in range(min(len(stop) - 1, len(text)), 0, -1):
            if text.endswith(stop[:k]):
                hold = max(hold, k)
                break
    tail = len(text) - len(text.rstrip(REPLACEMENT))
    return max(hold, tail)


class TextStream:
    """Decodes one request's tokens; ``push`` returns the new text that may be sent now."""

    def __init__(self, decode, stops: Sequence[str] = ()) -> None:
        self._decode = decode
        self.stops = [s for s in stops if s]
        self.tokens: list[int] = []
        self.text = ""
        self.sent = 0
        self.stopped = False

    def push(self, token: int) -> str:
        """Add a token; return the text delta that is final. Sets ``stopped`` when a stop string appears."""
        self.tokens.append(token)
        text = self._decode(self.tokens)
        cut = find_stop(text, self.stops)
        if cut is not None:
            self.text, self.stopped = text[:cut], True
            return self.flush()
        self.text = text
        safe = len(text) - held_back(text, self.stops)
        if safe <= self.sent:
            return ""
        delta, self.sent = text[self.sent : safe], safe
        return delta

    def flush(self) -> str:
        """Everything not sent yet (call when the request ends)."""
        delta, self.sent = self.text[self.sent :], len(self.text)
        return delta
