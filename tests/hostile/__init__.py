"""Hostile inputs, one module per door (see README)."""
