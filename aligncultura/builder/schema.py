"""Arrow schemas of everything the builder writes.

- ``DATASET_SCHEMA``: the built dataset (``dataset/data.parquet``), one row per kept prompt.
- ``POOL_SCHEMA``: every prompt the build saw (seed rows and generated prompts) with its labels,
  fingerprint and terminal state (``pool.parquet``): the audit trail.
- ``CANDIDATE_SCHEMA``: every response candidate with the critic's verdict (``candidates.parquet``).
- ``STATE_SCHEMA``: one terminal state per seed row and generated prompt (``row_states.parquet``).
"""

from __future__ import annotations

import pyarrow as pa

STATES = ("kept", "duplicate", "rejected", "quarantined")
ORIGINS = ("seed", "generated")

LABEL = pa.struct([("id", pa.int32()), ("name", pa.string()), ("p", pa.float64())])
SCORE = pa.struct([("id", pa.int32()), ("p", pa.float64()), ("status", pa.string())])
CRITIQUE = pa.struct([
    ("round", pa.int8()), ("candidate", pa.int8()), ("status", pa.string()),
    ("helpful", pa.int8()), ("harmless", pa.int8()), ("honest", pa.int8()),
    ("critique", pa.string()),
])
GENERATION = pa.struct([
    ("target_id", pa.int32()), ("round", pa.int8()), ("country", pa.string()),
    ("register", pa.string()), ("intent", pa.string()), ("few_shot_ids", pa.list_(pa.string())),
])
MODELS = pa.struct([("classifier", pa.string()), ("generator", pa.string()),
                    ("critic", pa.string())])
PROMPT_VERSIONS = pa.struct([(k, pa.string()) for k in
                             ("classify", "shortlist", "expand", "respond", "feedback", "critic")])

DATASET_SCHEMA = pa.schema([
    ("id", pa.string()),
    ("question", pa.string()),
    ("labels", pa.list_(LABEL)),  # every label with p >= delta, most probable first
    ("primary_id", pa.int32()),  # the most probable label; 41 (None) when none passes
    ("subdomain", pa.string()),
    ("domain", pa.string()),  # high-level UNESCO domain of the primary label
    ("form", pa.string()),
    ("response", pa.string()),
    ("hhh_pass", pa.list_(pa.int8(), 3)),  # helpful, harmless, honest of the kept response
    ("critiques", pa.list_(CRITIQUE)),  # every critique of this prompt, all rounds
    ("response_round", pa.int8()),  # 0 = first sampling, 1-2 = feedback rounds
    ("response_candidate", pa.int8()),
    ("simhash", pa.uint64()),
    ("split", pa.string()),
    ("origin", pa.string()),  # seed | generated
    ("seed_row_id", pa.string()),  # the input row id (seed rows)
    ("seed_class_id", pa.int32()),  # the input's own label, before reclassification
    ("generation", GENERATION),  # how a generated prompt was asked for (null for seeds)
    ("models", MODELS),
    ("prompt_versions", PROMPT_VERSIONS),
])

POOL_SCHEMA = pa.schema([
    ("prompt_id", pa.string()),
    ("origin", pa.string()),
    ("question", pa.string()),
    ("content_hash", pa.string()),
    ("simhash", pa.uint64()),
    ("seed_class_id", pa.int32()),
    ("generation", GENERATION),
    ("raw_generation", pa.string()),  # the generator's reply, before parsing (generated only)
    ("scores", pa.list_(SCORE)),  # every candidate label asked about, with p(yes)
    ("labels", pa.list_(LABEL)),
    ("primary_id", pa.int32()),
    ("state", pa.string()),
    ("reason", pa.string()),
    ("duplicate_of", pa.string()),
    ("duplicate_in", pa.string()),  # "pool" or a reference corpus name
    ("duplicate_hamming", pa.int32()),
])

CANDIDATE_SCHEMA = pa.schema([
    ("prompt_id", pa.string()),
    ("round", pa.int8()),
    ("candidate", pa.int8()),
    ("response", pa.string()),
    ("finish_reason", pa.string()),
    ("output_tokens", pa.int32()),
    ("generation_status", pa.string()),  # ok | failed | empty
    ("critic_status", pa.string()),  # scored | unscored | skipped
    ("critic_reason", pa.string()),
    ("helpful", pa.int8()),
    ("harmless", pa.int8()),
    ("honest", pa.int8()),
    ("critique", pa.string()),
    ("passed", pa.bool_()),
])

STATE_SCHEMA = pa.schema([
    ("row_id", pa.string()),
    ("origin", pa.string()),
    ("state", pa.string()),
    ("reason", pa.string()),
    ("duplicate_of", pa.string()),
])
