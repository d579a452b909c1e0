"""aligncultura: build (Stage I) and benchmark (Stage II) culturally aligned HHH data.

Importing the package is cheap: vllm, ray, torch and wandb are imported only inside the
functions that use them.
"""

__version__ = "0.1.0"
