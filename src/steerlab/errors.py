"""Exceptions steerlab raises.

Every refusal names what was expected and what was found, so a user can fix the input without reading
our source. All inherit from :class:`SteerlabError` (itself a ``ValueError``) so callers can catch one type.
"""


class SteerlabError(ValueError):
    """Base class: bad input that steerlab refused, with a message meant for a person."""


class ModelError(SteerlabError):
    """A model could not be loaded or its anatomy could not be mapped."""


class VectorError(SteerlabError):
    """A steering vector does not fit the model, holds bad numbers, or its file is malformed."""


class DataError(SteerlabError):
    """Contrast or evaluation data is unreadable, mis-shaped or too small."""


class SteeringError(SteerlabError):
    """A steering request (op, strength, layers, positions, site) cannot be carried out as asked."""
