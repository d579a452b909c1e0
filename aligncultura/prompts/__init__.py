"""Versioned prompt builders, one small module per role."""
