"""What one finished row of generation is, whichever backend produced it."""

from __future__ import annotations

from dataclasses import dataclass

STOP = "stop"  # EOS or a stop string
LENGTH = "length"  # the token budget ran out
FINISH_REASONS = (STOP, LENGTH)


@dataclass
class Generation:
    """One finished completion: its text, the token ids behind it, why it ended and its token counts.

    ``token_ids`` excludes the EOS token that ended it; ``text`` is cut before a stop string and is
    exactly the concatenation of what was streamed.
    """

    text: str
    token_ids: list[int]
    finish_reason: str
    prompt_tokens: int

    @property
    def completion_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def usage(self) -> dict[str, int]:
        """OpenAI-style usage counts."""
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        }
