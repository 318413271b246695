"""Reproduction: dispatch a paper to its recipe, the shared training engine, claim checks."""
