"""Stage I: build a CulturaX-style HHH dataset from a seed pool (`jobs.build_dataset`).

One module per step, each a set of small functions over plain rows:
- classify.py   multi-label reclassification from yes/no log-probabilities
- expand.py     new prompts for subdomains below the floor
- dedup.py      SimHash near-duplicates within the pool and against reference corpora
- respond.py    two-stage rejection sampling (generator -> HHH critic -> feedback rounds)
- split.py      stratified 80/10/10 split and cross-split leakage
- output.py / card.py / accounting.py / schema.py   what is written, and the checks
- calls.py      model roles bound to the runner and per-stage throughput
- pipeline.py   `build(cfg)`: the steps in order
- config.py     the structured config (ConfigStore: build_dataset_schema)
"""
