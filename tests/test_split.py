"""The seeded, stratified 80/10/10 split and the seeded `limit` selection."""

from __future__ import annotations

from collections import Counter, defaultdict

import pyarrow as pa
import pytest
from test_data import culturax_config, preset

from aligncultura.data.reader import PROMPT_SCHEMA, content_hash, load_prompts, read_input
from aligncultura.data.split import assign_splits, select
from aligncultura.errors import InputError


def table(rows: list[tuple[str, int | None]]) -> pa.Table:
    """A PROMPT_SCHEMA table from (question, class_id) pairs; row ids are t:<index>."""
    return pa.Table.from_pylist(
        [{"row_id": f"t:{i}", "source": "t", "row_index": i, "question": q,
          "content_hash": content_hash(q), "class_id": c} for i, (q, c) in enumerate(rows)],
        schema=PROMPT_SCHEMA,
    )


def stratum(class_id: int | None, n: int, tag: str = "") -> list[tuple[str, int | None]]:
    return [(f"{tag}question {i} of class {class_id}?", class_id) for i in range(n)]


def splits(t: pa.Table) -> list[str]:
    return t.column("split").to_pylist()


def by_class(t: pa.Table) -> dict[int | None, Counter]:
    out: dict[int | None, Counter] = defaultdict(Counter)
    for c, s in zip(t.column("class_id").to_pylist(), splits(t), strict=True):
        out[c][s] += 1
    return out


MIXED = table(stratum(0, 50) + stratum(11, 37) + stratum(None, 23) + stratum(32, 120))


# ---- assign_splits ------------------------------------------------------------------------------


def test_same_input_and_seed_same_split():
    assert splits(assign_splits(MIXED, seed=7)) == splits(assign_splits(MIXED, seed=7))
    assert splits(assign_splits(MIXED)) == splits(assign_splits(MIXED, (0.8, 0.1, 0.1), 42))


def test_different_seed_different_split():
    a, b = splits(assign_splits(MIXED, seed=1)), splits(assign_splits(MIXED, seed=2))
    assert a != b
    assert Counter(a) == Counter(b)  # sizes depend on the counts only


def test_split_does_not_depend_on_row_order():
    shuffled = MIXED.take(pa.array(list(reversed(range(MIXED.num_rows)))))
    a = dict(zip(MIXED.column("row_id").to_pylist(), splits(assign_splits(MIXED)), strict=True))
    b = dict(zip(shuffled.column("row_id").to_pylist(), splits(assign_splits(shuffled)),
                 strict=True))
    assert a == b


def test_adding_another_class_never_moves_a_row():
    base = table(stratum(3, 40))
    more = table(stratum(3, 40) + stratum(4, 40))
    assert splits(assign_splits(base)) == splits(assign_splits(more))[:40]


def test_exact_duplicates_land_in_the_same_split():
    rows = stratum(5, 60)
    # each of 15 questions repeated 2-4 times, with changed case and whitespace too
    for i in range(15):
        q = rows[i][0]
        rows += [(q, 5), (f"  {q.upper()} ", 5)] + [(q, 6)] * (i % 3)
    t = assign_splits(table(rows), seed=3)
    seen: dict[str, set[str]] = defaultdict(set)
    for h, s in zip(t.column("content_hash").to_pylist(), splits(t), strict=True):
        seen[h].add(s)
    assert all(len(s) == 1 for s in seen.values())
    assert len(seen) == 60  # duplicates were grouped, not counted as new groups
    assert {s for ss in seen.values() for s in ss} == {"train", "val", "test"}


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_a_stratum_of_1_to_4_groups_goes_wholly_to_train(n):
    t = assign_splits(table(stratum(7, n) + stratum(8, 100)))
    assert by_class(t)[7] == Counter(train=n)
    # duplicates count once: 4 groups of 3 rows each are still 4 groups
    t = assign_splits(table(stratum(7, n) * 3))
    assert set(splits(t)) == {"train"}


def test_the_rule_is_documented():
    doc = assign_splits.__doc__
    assert "1-4 groups goes wholly to train" in " ".join(doc.split())


@pytest.mark.parametrize("n", [5, 9, 10, 11, 15, 19, 20, 37, 99, 100, 384])
def test_strata_are_within_one_group_of_80_10_10(n):
    counts = by_class(assign_splits(table(stratum(2, n)), seed=n))[2]
    assert sum(counts.values()) == n
    for name, frac in (("train", 0.8), ("val", 0.1), ("test", 0.1)):
        assert abs(counts[name] - n * frac) <= 1, (n, counts)
    if n >= 10:
        assert counts["val"] >= 1 and counts["test"] >= 1


def test_other_fractions():
    counts = by_class(assign_splits(table(stratum(1, 100)), (0.5, 0.25, 0.25)))[1]
    assert counts == Counter(train=50, val=25, test=25)


@pytest.mark.parametrize("fractions", [(0.8, 0.1, 0.2), (0.9, 0.1, 0.1), (1.2, -0.1, -0.1),
                                       (0.8, 0.2), (0.5, 0.2, 0.2, 0.1)])
def test_bad_fractions_raise_input_error(fractions):
    with pytest.raises(InputError, match="dataset.split_fractions"):
        assign_splits(MIXED, fractions)


# ---- select and limit ---------------------------------------------------------------------------


def test_select_a_split():
    t = assign_splits(MIXED)
    for name in ("train", "val", "test"):
        assert set(splits(select(t, name, None, 42))) == {name}
    assert select(t, "all", None, 42).equals(t)
    total = sum(select(t, name, None, 42).num_rows for name in ("train", "val", "test"))
    assert total == t.num_rows


def test_limit_is_deterministic_and_prefix_stable():
    t = assign_splits(MIXED)
    five = select(t, "all", 5, 42).column("row_id").to_pylist()
    assert five == select(t, "all", 5, 42).column("row_id").to_pylist()
    assert len(five) == 5
    ten = select(t, "all", 10, 42).column("row_id").to_pylist()
    assert set(five) <= set(ten) and len(ten) == 10
    assert five != [f"t:{i}" for i in range(5)]  # a seeded choice, not the head of the file
    # rows keep input order
    order = t.column("row_id").to_pylist()
    assert ten == sorted(ten, key=order.index)
    assert select(t, "all", 10, 43).column("row_id").to_pylist() != ten
    assert select(t, "all", 10_000, 42).num_rows == t.num_rows


@pytest.mark.parametrize("split, limit, message", [
    ("dev", None, "dataset.split='dev'"),
    ("Train", None, "dataset.split='Train'"),
    ("all", 0, "dataset.limit=0"),
    ("all", -3, "dataset.limit=-3"),
])
def test_bad_split_or_limit_raise_input_error(split, limit, message):
    with pytest.raises(InputError, match=message):
        select(assign_splits(MIXED), split, limit, 42)


# ---- load_prompts -------------------------------------------------------------------------------


def test_load_prompts_on_the_sample():
    res = load_prompts(preset("sample", limit=5))
    assert res.table.num_rows == 5
    assert res.counts == {"read": 60, "used": 60, "quarantined": 0, "selected": 5,
                          "not_selected": 55}
    ten = load_prompts(preset("sample", limit=10)).table.column("row_id").to_pylist()
    assert set(res.table.column("row_id").to_pylist()) <= set(ten)
    # every sample stratum has at most 3 groups: all of it is train
    assert set(load_prompts(preset("sample")).table.column("split").to_pylist()) == {"train"}
    assert load_prompts(preset("sample", split="test")).table.num_rows == 0


@pytest.mark.parametrize("changes, message", [
    ({"split": "dev"}, "dataset.split"),
    ({"limit": 0}, "dataset.limit"),
    ({"split_fractions": [0.7, 0.1, 0.1]}, "dataset.split_fractions"),
])
def test_load_prompts_rejects_bad_settings(changes, message):
    with pytest.raises(InputError, match=message):
        load_prompts(preset("sample", **changes))


# ---- the released CulturaX.csv ------------------------------------------------------------------


@pytest.fixture(scope="module")
def culturax_split() -> pa.Table:
    return assign_splits(read_input(culturax_config()).table)


def test_culturax_global_proportions_close_to_80_10_10(culturax_split):
    counts = Counter(splits(culturax_split))
    n = culturax_split.num_rows
    assert n == 1500
    # rare classes (1-4 groups) go wholly to train, so train runs slightly over 80 %
    assert abs(counts["train"] / n - 0.8) < 0.02, counts
    assert abs(counts["val"] / n - 0.1) < 0.02, counts
    assert abs(counts["test"] / n - 0.1) < 0.02, counts


def test_culturax_no_content_hash_in_two_splits(culturax_split):
    seen: dict[str, set[str]] = defaultdict(set)
    for h, s in zip(culturax_split.column("content_hash").to_pylist(), splits(culturax_split),
                    strict=True):
        seen[h].add(s)
    assert all(len(s) == 1 for s in seen.values())


def test_culturax_load_prompts_split_and_limit():
    test = load_prompts(culturax_config(split="test"))
    assert set(test.table.column("split").to_pylist()) == {"test"}
    again = load_prompts(culturax_config(split="test"))
    assert again.table.column("row_id").to_pylist() == test.table.column("row_id").to_pylist()
    small = load_prompts(culturax_config(split="test", limit=20))
    assert small.table.num_rows == 20
    assert set(small.table.column("row_id").to_pylist()) <= set(
        test.table.column("row_id").to_pylist())
    assert small.counts["read"] == 1500 and small.counts["not_selected"] == 1480
