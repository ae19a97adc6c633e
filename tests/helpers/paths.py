"""Fixture locations."""

from pathlib import Path

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
EDGES = FIXTURES / "edges"
MINI_DATA = FIXTURES / "uwe-data-mini"
