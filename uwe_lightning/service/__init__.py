"""The ranking service (``python -m uwe_lightning.serve``): FastAPI app, micro-batcher, request limits."""
