"""Ranking against a target space encoded once: packed storage, the on-disk cache, the :class:`Ranker`."""
