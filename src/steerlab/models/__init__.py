"""Loading models, mapping where they can be steered, and the handle the lower rooms take."""

from steerlab.models.anatomy import SITES, Anatomy, Block, find_anatomy
from steerlab.models.handle import ModelHandle
from steerlab.models.loading import EMBEDDED_ID, LoadedModel, load_source

__all__ = [
    "EMBEDDED_ID",
    "SITES",
    "Anatomy",
    "Block",
    "LoadedModel",
    "ModelHandle",
    "find_anatomy",
    "load_source",
]
