"""Bridges to the tools users already run (WorkRB, ...); each needs its own optional package."""
