"""Stage II: generation and judging stages, verdict parsing, rubrics, metrics."""
