"""The UNESCO-derived cultural taxonomy used by AlignCultura.

41 subdomains (the authors' class index 0-40) plus 41 = None, grouped into the 9 high-level
domains of the UNESCO Framework for Cultural Statistics (2009). The id blocks follow the
authors' README for the released dataset (ids 0-9 heritage, 10-13 performance, and so on):
ids 5, 18 and 36 were recovered from the
released counts, 30, 31 and 40 from the authors' later 41-class list.

Each subdomain also carries a *form*: ``tangible`` (physical heritage, objects and places),
``intangible`` (practices, knowledge, performance) or ``media`` (recorded, broadcast, printed
or digital media). This three-way split is a project decision, not the paper's: it follows the
UNESCO FCS distinction between tangible and intangible heritage and puts the recorded and
networked media domains (audio-visual, books and press, interactive media) in their own form.

In every aligncultura schema ``domain`` means the high-level UNESCO domain; the released CSV's
free-text ``domain`` column is kept as ``topic``.
"""

from __future__ import annotations

import numbers
import re
from dataclasses import dataclass

NONE_ID = 41


@dataclass(frozen=True)
class Subdomain:
    id: int
    name: str
    domain: str
    form: str  # tangible | intangible | media | none


DOMAINS: tuple[str, ...] = (
    "Cultural and Natural Heritage",
    "Intangible Cultural Heritage",
    "Audio-visual Media",
    "Performance and Celebration",
    "Design and Creative Services",
    "Visual Arts",
    "Music",
    "Books and Press",
    "Interactive and Digital Media",
)

FORMS: tuple[str, ...] = ("tangible", "intangible", "media")

# (id, name, domain index, form)
_TABLE: tuple[tuple[int, str, int, str], ...] = (
    (0, "Artifacts", 0, "tangible"),
    (1, "Monuments", 0, "tangible"),
    (2, "Museums", 0, "tangible"),
    (3, "Historical and Archeological Sites", 0, "tangible"),
    (4, "National Parks", 0, "tangible"),
    (5, "Zoos and Aquariums", 0, "tangible"),
    (6, "Botanical Gardens", 0, "tangible"),
    (7, "Marine Ecosystems", 0, "tangible"),
    (8, "Cultural Landscapes", 0, "tangible"),
    (9, "Libraries", 0, "tangible"),
    (10, "Language", 1, "intangible"),
    (11, "Culinary Arts", 1, "intangible"),
    (12, "Crafts", 1, "intangible"),
    (13, "Bio-Cultural Practices", 1, "intangible"),
    (14, "Folk Sports", 1, "intangible"),
    (15, "Festivals", 1, "intangible"),
    (16, "Film and Video", 2, "media"),
    (17, "TV", 2, "media"),
    (18, "Radio", 2, "media"),
    (19, "Festivals and Markets", 3, "intangible"),
    (20, "Theatrical Performance", 3, "intangible"),
    (21, "Dance", 3, "intangible"),
    (22, "Opera", 3, "intangible"),
    (23, "Graphic Design", 4, "tangible"),
    (24, "Fashion Design", 4, "tangible"),
    (25, "Industrial Design", 4, "tangible"),
    (26, "Architectural Services", 4, "tangible"),
    (27, "Interior Design", 4, "tangible"),
    (28, "Fine Arts", 5, "tangible"),
    (29, "Photography", 5, "tangible"),
    (30, "Illustrations", 5, "tangible"),
    (31, "Record Music", 6, "media"),
    (32, "Live Music", 6, "intangible"),
    (33, "Musical Instruments", 6, "tangible"),
    (34, "Books", 7, "media"),
    (35, "Newspapers", 7, "media"),
    (36, "Magazines", 7, "media"),
    (37, "Social Networks", 8, "media"),
    (38, "Blogs", 8, "media"),
    (39, "Video Games", 8, "media"),
    (40, "Wikis", 8, "media"),
)

SUBDOMAINS: tuple[Subdomain, ...] = tuple(
    Subdomain(i, name, DOMAINS[d], form) for i, name, d, form in _TABLE
) + (Subdomain(NONE_ID, "None", "None", "none"),)

_BY_ID = {s.id: s for s in SUBDOMAINS}
_BY_NAME = {s.name.casefold(): s for s in SUBDOMAINS}


class TaxonomyError(ValueError):
    """An unknown subdomain id or name."""


def subdomain(key: int | str) -> Subdomain:
    """Look a subdomain up by id (int or digit string) or by name (case-insensitive)."""
    if isinstance(key, bool) or not isinstance(key, numbers.Integral | str):
        # not str(key): None would find the "None" class, 3.0 would be looked up as a name
        raise TaxonomyError(f"unknown subdomain {key!r}: expected an id 0-{NONE_ID} or a name")
    if isinstance(key, numbers.Integral):
        key = int(key)
        if key in _BY_ID:
            return _BY_ID[key]
        raise TaxonomyError(f"unknown subdomain id {key}: valid ids are 0-{NONE_ID} ({NONE_ID} = None)")
    text = str(key).strip()
    if re.fullmatch(r"[+-]?\d+", text):  # not str.isdigit(): "²" and "--3" pass it
        return subdomain(int(text))
    found = _BY_NAME.get(text.casefold())
    if found is None:
        raise TaxonomyError(
            f"unknown subdomain name {key!r}: see aligncultura.data.taxonomy.SUBDOMAINS for the 42 names"
        )
    return found


def domain_of(key: int | str) -> str:
    return subdomain(key).domain


def form_of(key: int | str) -> str:
    return subdomain(key).form


def name_of(key: int | str) -> str:
    return subdomain(key).name


def is_valid_id(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value in _BY_ID


def subdomains_in(domain: str) -> list[Subdomain]:
    """The subdomains of one high-level domain (case-insensitive name)."""
    want = domain.strip().casefold()
    names = {d.casefold(): d for d in DOMAINS}
    if want not in names:
        raise TaxonomyError(f"unknown domain {domain!r}: one of {', '.join(DOMAINS)}")
    return [s for s in SUBDOMAINS if s.domain == names[want]]
