"""The model layer: backbones, the shared encoder, late-interaction scorers, and :class:`UWEModel` (save/load)."""
