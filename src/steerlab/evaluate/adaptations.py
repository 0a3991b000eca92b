"""One interface over the ways to adapt a model: nothing, a prompt, a steering vector, a LoRA adapter.

Every measurement asks an :class:`Adaptation` two things: how to render a user turn (prompting changes
the text the model reads) and what to install on the model meanwhile (steering installs hooks, LoRA
injects adapter layers; both are removed on exit). The measurement code is then the same for every method, so the
comparison is fair by construction.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from steerlab.data.chat import has_chat_template, plain_format

if TYPE_CHECKING:
    from steerlab.engine.spec import Steering
    from steerlab.evaluate.lora import LoraAdapter
    from steerlab.lm import LM


class Opening(str):
    """A prompt that is text to continue, not a user turn (continuation-style tasks for base models).

    Every adaptation renders it without any dialogue around it: a prompting instruction becomes a line
    before it and few-shot examples become example texts before it. A plain ``str`` prompt is a user turn.
    """

    __slots__ = ()


def render_continuation(
    opening: str, *, system: str | None = None, shots: Sequence[tuple[str, str]] = ()
) -> str:
    """``opening`` after an optional instruction line and example texts, as a base model reads them."""
    parts = [system] if system else []
    parts += [answer for _, answer in shots]
    return "".join(f"{part}\n\n" for part in parts) + opening


def render_chat(
    lm: LM, user: str, *, system: str | None = None, shots: Sequence[tuple[str, str]] = ()
) -> str:
    """The prompt for ``user`` after an optional system turn and few-shot (user, assistant) exchanges;
    an :class:`Opening` is rendered as text to continue (:func:`render_continuation`)."""
    if isinstance(user, Opening):
        return render_continuation(user, system=system, shots=shots)
    if not has_chat_template(lm.tokenizer):  # the one dialogue layout of data.chat, turn by turn
        head = f"System: {system}\n" if system else ""
        turns = "".join(plain_format(u, a) + "\n" for u, a in shots)
        return head + turns + plain_format(user)
    messages: list[dict[str, str]] = [{"role": "system", "content": system}] if system else []
    for u, a in shots:
        messages += [{"role": "user", "content": u}, {"role": "assistant", "content": a}]
    messages.append({"role": "user", "content": user})
    return lm.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


@dataclass
class Adaptation:
    """A named way to change the model's behaviour, with what it cost to build.

    ``family`` is ``"none"``, ``"prompting"``, ``"steering"``, ``"lora"`` or ``"combined"``. ``steering``
    holds the engine's :class:`Steering` objects (installed with ``lm.steer``); ``lora`` a trained adapter
    (injected in place for the duration); ``system``/``shots`` the prompt changes. ``build`` records the
    seconds and passes spent making it.
    """

    name: str
    family: str = "none"
    system: str | None = None
    shots: list[tuple[str, str]] = field(default_factory=list)
    steering: list[Steering] | None = None
    lora: LoraAdapter | None = None
    build: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

    def render(self, lm: LM, user: str) -> str:
        return render_chat(lm, user, system=self.system, shots=self.shots)

    @contextlib.contextmanager
    def active(self, lm: LM) -> Iterator[LM]:
        """The model to call while this adaptation is in force (hooks removed on exit, even on error)."""
        with contextlib.ExitStack() as stack:
            if self.lora is not None:
                stack.enter_context(self.lora.applied(lm))
            if self.steering:
                stack.enter_context(lm.steer(list(self.steering)))
            yield lm

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "family": self.family, "settings": self.settings, "build": self.build}


def baseline() -> Adaptation:
    """The unadapted model (the reference every other number is compared with)."""
    return Adaptation("baseline", "none")


def prompting(name: str, instruction: str | None, shots: Sequence[tuple[str, str]] = ()) -> Adaptation:
    """An instruction as the system turn plus few-shot exchanges."""
    return Adaptation(
        name,
        "prompting",
        system=instruction,
        shots=list(shots),
        settings={"instruction": instruction, "shots": len(shots)},
    )


def steering(name: str, steerings: Sequence[Steering], **settings: Any) -> Adaptation:
    return Adaptation(name, "steering", steering=list(steerings), settings=dict(settings))


def combine(name: str, parts: Sequence[Adaptation]) -> Adaptation:
    """Several adaptations at once (composability): prompts stack, steerings stack, at most one LoRA."""
    adapters = [p.lora for p in parts if p.lora is not None]
    if len(adapters) > 1:
        from steerlab.errors import SteeringError

        raise SteeringError("combining two LoRA adapters in one run is not supported")
    systems = [p.system for p in parts if p.system]
    shots = [s for p in parts for s in p.shots]
    steerings = [s for p in parts for s in (p.steering or [])]
    return Adaptation(
        name,
        "combined",
        system="\n".join(systems) or None,
        shots=shots,
        steering=steerings or None,
        lora=adapters[0] if adapters else None,
        settings={"parts": [p.name for p in parts]},
    )
