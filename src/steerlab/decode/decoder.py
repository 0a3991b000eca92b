"""One row's decoding state: sampled token ids in, final text deltas and a finish reason out.

Every backend (the torch loop, the server's continuous-batching scheduler, llama.cpp) feeds the tokens it
samples to a :class:`RowDecoder`, so EOS, stop strings, held-back streaming text, finish reasons and usage
counts follow one rule. The returned text is by construction what was streamed: :meth:`RowDecoder.push`
only ever hands out text that is final, and the final text is the sent text plus the flushed tail.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence

from steerlab.decode.result import LENGTH, STOP, Generation
from steerlab.decode.stops import find_stop, held_back
from steerlab.errors import SteerlabError

Detokenize = Callable[[list[int]], str]


class RowDecoder:
    """Decodes one row. ``push(token)`` returns the text that may be sent now; ``done`` when it ended."""

    def __init__(
        self,
        detokenize: Detokenize,
        *,
        max_tokens: int,
        eos: Collection[int] = (),
        stop: Sequence[str] | None = None,
        prompt_tokens: int = 0,
    ) -> None:
        if max_tokens < 1:
            raise SteerlabError(f"max_tokens must be >= 1, got {max_tokens}")
        self._detokenize = detokenize
        self.max_tokens = max_tokens
        self.eos = frozenset(eos)
        self.stops = [s for s in stop or () if s]
        self.prompt_tokens = prompt_tokens
        self.tokens: list[int] = []
        self.text = ""  # everything decoded so far, cut at a stop string
        self.sent = 0  # characters of ``text`` handed out already
        self.finish_reason: str | None = None

    @property
    def done(self) -> bool:
        return self.finish_reason is not None

    def push(self, token: int) -> str:
        """Take one sampled token; return the new text that is final (possibly empty)."""
        if self.done:
            raise SteerlabError("this row has finished; it takes no more tokens")
        if token in self.eos:
            return self.finish(STOP)
        self.tokens.append(int(token))
        decoded = self._detokenize(self.tokens)
        sent_text = self.text[: self.sent]
        # Detokenizers keep earlier text as a prefix in practice; if one ever rewrote sent text, the
        # sent part stays as sent so the stream and the result can never disagree.
        text = decoded if decoded.startswith(sent_text) else sent_text + decoded[self.sent :]
        cut = find_stop(text, self.stops)
        if cut is not None:
            self.text = text[: max(cut, self.sent)]
            return self.finish(STOP)
        self.text = text
        if len(self.tokens) >= self.max_tokens:
            return self.finish(LENGTH)
        safe = len(text) - held_back(text, self.stops)
        if safe <= self.sent:
            return ""
        delta, self.sent = text[self.sent : safe], safe
        return delta

    def finish(self, reason: str) -> str:
        """End the row now (EOS, stop, length, or a backend's own limit); return the unsent tail."""
        if self.finish_reason is None:
            self.finish_reason = reason
        delta, self.sent = self.text[self.sent :], len(self.text)
        return delta

    def result(self) -> Generation:
        """The finished row (a row still running reports ``length``: the caller's budget ended it)."""
        return Generation(self.text, list(self.tokens), self.finish_reason or LENGTH, self.prompt_tokens)
