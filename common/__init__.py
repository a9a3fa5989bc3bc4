"""Shared logic of the three pipeline scripts: one module per concern."""
