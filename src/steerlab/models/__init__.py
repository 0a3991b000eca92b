"""Loading models and mapping where they can be steered."""

from steerlab.models.anatomy import SITES, Anatomy, Block, find_anatomy
from steerlab.models.loading import EMBEDDED_ID, LoadedModel, load_source

__all__ = ["EMBEDDED_ID", "SITES", "Anatomy", "Block", "LoadedModel", "find_anatomy", "load_source"]
