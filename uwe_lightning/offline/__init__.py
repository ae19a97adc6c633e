"""Offline bundles for air-gapped GPU nodes: :func:`pack`, :func:`unpack`, :func:`verify`."""

from uwe_lightning.offline.bundle import pack, unpack, verify

__all__ = ["pack", "unpack", "verify"]
