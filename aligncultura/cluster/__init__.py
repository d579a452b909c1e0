"""Slurm rendering and submission, sweep status."""
