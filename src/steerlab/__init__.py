"""steerlab: adapt language models by steering their activations.

Extract a steering vector from contrast data, apply it during generation (reversibly), measure what it
does, and serve it. The public surface is small::

    import steerlab
    lm = steerlab.load()                       # embedded SmolLM2-135M-Instruct
    vec = steerlab.extract(lm, pairs, method="mean_diff")
    with lm.steer(vec, strength=0.06, layers="10-16"):
        print(lm.generate("Tell me about your day."))
"""

from steerlab.engine import Steering, SteeringContext
from steerlab.engine.condition import Condition, all_of, any_of, not_
from steerlab.errors import DataError, ModelError, SteeringError, SteerlabError, VectorError
from steerlab.extract import extract
from steerlab.lm import LM, from_model, load
from steerlab.methods.condition import find_condition
from steerlab.reader import read
from steerlab.vector import SteeringVector

__version__ = "0.1.0"

__all__ = [
    "LM",
    "Condition",
    "DataError",
    "ModelError",
    "Steering",
    "SteeringContext",
    "SteeringError",
    "SteeringVector",
    "SteerlabError",
    "VectorError",
    "all_of",
    "any_of",
    "extract",
    "find_condition",
    "from_model",
    "load",
    "not_",
    "read",
]
