"""The steerlab server: OpenAI-compatible API with per-request steering, vector registry, playground.

Needs the ``serve`` extra (FastAPI, uvicorn, python-multipart). ``create_app(lm)`` builds the app;
``steerlab serve`` runs it.
"""

from steerlab.server.app import create_app
from steerlab.server.config import ServerConfig
from steerlab.server.registry import VectorRegistry
from steerlab.server.runner import ThreadedServer

__all__ = ["ServerConfig", "ThreadedServer", "VectorRegistry", "create_app"]
