"""Where tokens are computed besides the torch engine: each backend speaks the decode contract
(:mod:`steerlab.decode`) and refuses what it cannot express. ``backends.vllm`` applies steerlab steerings
per request inside stock vLLM."""
