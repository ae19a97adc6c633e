"""The data layer: skill-centred bipartite graphs, edge files, and the training LightningDataModule."""
