"""Command-line entry points (thin Hydra mains); ``python -m uwe_lightning.<name>`` shims call them."""
