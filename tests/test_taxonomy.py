"""The 42-entry class index, its 9 UNESCO domains and forms, and lookups."""

from __future__ import annotations

import pytest

from aligncultura.data.taxonomy import (
    DOMAINS,
    FORMS,
    NONE_ID,
    SUBDOMAINS,
    TaxonomyError,
    domain_of,
    form_of,
    is_valid_id,
    name_of,
    subdomain,
    subdomains_in,
)

# the id blocks of the authors' README for the released dataset, in DOMAINS order
BLOCKS = {
    "Cultural and Natural Heritage": range(0, 10),
    "Intangible Cultural Heritage": range(10, 16),
    "Audio-visual Media": range(16, 19),
    "Performance and Celebration": range(19, 23),
    "Design and Creative Services": range(23, 28),
    "Visual Arts": range(28, 31),
    "Music": range(31, 34),
    "Books and Press": range(34, 37),
    "Interactive and Digital Media": range(37, 41),
}

# a few names straight from the README table, including the recovered ids 5, 18, 36, 30, 31, 40
README_NAMES = {
    0: "Artifacts",
    3: "Historical and Archeological Sites",
    5: "Zoos and Aquariums",
    18: "Radio",
    19: "Festivals and Markets",
    30: "Illustrations",
    31: "Record Music",
    36: "Magazines",
    40: "Wikis",
    41: "None",
}


def test_42_entries_with_ids_0_to_41_in_order():
    assert len(SUBDOMAINS) == 42
    assert [s.id for s in SUBDOMAINS] == list(range(42))
    assert NONE_ID == 41
    assert len({s.name.casefold() for s in SUBDOMAINS}) == 42


def test_names_match_the_readme_table():
    for i, name in README_NAMES.items():
        assert subdomain(i).name == name


def test_nine_domains_with_the_readme_id_blocks():
    assert len(DOMAINS) == 9
    assert list(DOMAINS) == list(BLOCKS)
    for dom, ids in BLOCKS.items():
        assert [s.id for s in subdomains_in(dom)] == list(ids), dom
    covered = sorted(i for ids in BLOCKS.values() for i in ids)
    assert covered == list(range(41))
    assert subdomain(NONE_ID).domain == "None"


def test_forms_are_valid():
    for s in SUBDOMAINS[:-1]:
        assert s.form in FORMS, s
    assert subdomain(NONE_ID).form == "none"
    # every form is used, and the heritage block is all tangible, ICH all intangible
    assert {s.form for s in SUBDOMAINS[:-1]} == set(FORMS)
    assert {s.form for s in subdomains_in("Cultural and Natural Heritage")} == {"tangible"}
    assert {s.form for s in subdomains_in("Intangible Cultural Heritage")} == {"intangible"}


@pytest.mark.parametrize("key", [11, "11", " 11 ", "+11", "culinary arts", "CULINARY ARTS",
                                 "  Culinary Arts "])
def test_lookup_by_id_digit_string_or_name(key):
    s = subdomain(key)
    assert (s.id, s.name, s.domain, s.form) == (
        11, "Culinary Arts", "Intangible Cultural Heritage", "intangible"
    )
    assert name_of(key) == "Culinary Arts"
    assert domain_of(key) == "Intangible Cultural Heritage"
    assert form_of(key) == "intangible"


def test_lookup_of_the_none_class():
    assert subdomain("none") is subdomain(41) is subdomain("41")


def test_lookup_accepts_numpy_integers():
    np = pytest.importorskip("numpy")
    assert subdomain(np.int64(3)).id == 3


def test_subdomains_in_is_case_insensitive():
    assert subdomains_in("  music ") == subdomains_in("Music")
    with pytest.raises(TaxonomyError, match="unknown domain 'Cuisine'"):
        subdomains_in("Cuisine")


@pytest.mark.parametrize(
    "key, message",
    [
        (42, "unknown subdomain id 42: valid ids are 0-41"),
        (-1, "unknown subdomain id -1"),
        ("99", "unknown subdomain id 99"),
        ("Cuisine", "unknown subdomain name 'Cuisine'"),
        ("", "unknown subdomain name ''"),
        ("--3", "unknown subdomain name '--3'"),
        ("\u00b2", "unknown subdomain name"),  # superscript two: str.isdigit() but not an id
        (True, "unknown subdomain True: expected an id 0-41 or a name"),
        (False, "unknown subdomain False"),
        (None, "unknown subdomain None"),  # not the "None" class
        (3.0, "unknown subdomain 3.0"),
    ],
)
def test_unknown_keys_raise_taxonomy_error(key, message):
    with pytest.raises(TaxonomyError, match=message):
        subdomain(key)
    assert issubclass(TaxonomyError, ValueError)


def test_is_valid_id():
    assert all(is_valid_id(i) for i in range(42))
    for bad in (42, -1, True, False, "3", 3.0, None):
        assert not is_valid_id(bad), bad

