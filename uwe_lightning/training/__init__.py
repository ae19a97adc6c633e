"""Training: the LightningModule, optimiser, checkpointing, callbacks, provenance and the run itself."""
