"""The pack's ESCO v1.2.0 skills and relations, rebuilt from the official ESCO v1.2.0 CSV download.

The pack's ``esco/v1.2.0/skills_en.csv`` and ``occupationSkillRelations_en.csv`` were assembled from public
copies (their SOURCE.md); they cannot be rebuilt byte for byte from a public URL. The official download (ESCO
hands out an e-mailed link, so there is no fixed URL to fetch) has the same concepts; these transforms bring it
into the pack's layout, so that every task built on it has the pack's sizes:

* skills: the pack's columns (``conceptType, conceptUri, skillType, reuseLevel, preferredLabel, altLabels,
  description, skillType_source``; the last is ``official`` here), rows sorted by ``conceptUri`` as in the pack
  (SkillNorm's val/test split depends on row order: this order gives the pack's 13,502 / 72,006 queries, ESCO's
  own order the paper's 13,222 / 73,311);
* relations: ``occupationUri, relationType, skillType, skillUri``, sorted by (occupationUri, relationType,
  skillUri) as in the pack.

CSV is read and written with the ``csv`` module (minimal quoting, ``\\n`` line ends: the pack's own style), so
cell text is kept exactly. :func:`counts` gives the numbers the result is checked against (the manifest ships the
pack's).
"""

from __future__ import annotations

import csv
import io
import zipfile
from collections.abc import Callable
from pathlib import Path

from uwe_lightning.esco import split_alt_labels
from uwe_lightning.io import DataError

V10X_OCCUPATION_COLUMNS = ("conceptType", "conceptUri", "iscoGroup", "preferredLabel", "altLabels", "description")
SKILL_COLUMNS = ("conceptType", "conceptUri", "skillType", "reuseLevel", "preferredLabel", "altLabels", "description")
RELATION_COLUMNS = ("occupationUri", "relationType", "skillType", "skillUri")


def zip_member(archive: str | Path, basename: str) -> bytes:
    """The bytes of the one member of ``archive`` whose file name is ``basename`` (whatever folder it is in)."""
    try:
        with zipfile.ZipFile(archive) as zf:
            names = [n for n in zf.namelist() if n.rsplit("/", 1)[-1] == basename]
            if len(names) != 1:
                found = "no member" if not names else f"{len(names)} members ({names})"
                raise DataError(f"{archive}: {found} named {basename!r}; is it the right archive?")
            return zf.read(names[0])
    except zipfile.BadZipFile as err:
        raise DataError(f"{archive}: not a readable zip archive ({err})") from err


def _rows(data: bytes, source: str, required: tuple[str, ...]) -> tuple[list[str], list[list[str]]]:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise DataError(f"{source}: not UTF-8 text ({err.reason})") from err
    rows = list(csv.reader(io.StringIO(text, newline="")))
    if not rows:
        raise DataError(f"{source}: empty CSV")
    header = rows[0]
    missing = [c for c in required if c not in header]
    if missing:
        raise DataError(f"{source}: missing column(s) {missing}; the file has {header}")
    return header, rows[1:]


def _csv_bytes(header: list[str], rows: list[list[str]]) -> bytes:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows([header, *rows])
    return out.getvalue().encode("utf-8")


def _select(header: list[str], rows: list[list[str]], columns: tuple[str, ...], source: str) -> list[list[str]]:
    position = [header.index(c) for c in columns]
    out = []
    for i, row in enumerate(rows, start=2):
        if len(row) != len(header):
            raise DataError(f"{source}: line {i}: {len(row)} fields, the header has {len(header)}")
        out.append([row[p] for p in position])
    return out


def skills_to_pack(data: bytes, source: str = "skills_en.csv") -> bytes:
    """Official v1.2.0 ``skills_en.csv`` -> the pack's layout (see the module docstring)."""
    header, rows = _rows(data, source, SKILL_COLUMNS)
    selected = [[*row, "official"] for row in _select(header, rows, SKILL_COLUMNS, source)]
    selected.sort(key=lambda row: row[1])
    return _csv_bytes([*SKILL_COLUMNS, "skillType_source"], selected)


def relations_to_pack(data: bytes, source: str = "occupationSkillRelations_en.csv") -> bytes:
    """Official v1.2.0 ``occupationSkillRelations_en.csv`` -> the pack's layout (see the module docstring)."""
    header, rows = _rows(data, source, RELATION_COLUMNS)
    selected = _select(header, rows, RELATION_COLUMNS, source)
    selected.sort(key=lambda row: (row[0], row[1], row[3]))
    return _csv_bytes(list(RELATION_COLUMNS), selected)


def v10x_occupations_to_pack(data: bytes, source: str = "occupations_en.csv") -> bytes:
    """An ESCO v1.0.x ``occupations_en.csv`` trimmed to the pack's six columns (its SOURCE.md: "columns trimmed");
    a file that has exactly these columns comes out byte for byte as it went in."""
    header, rows = _rows(data, source, V10X_OCCUPATION_COLUMNS)
    return _csv_bytes(list(V10X_OCCUPATION_COLUMNS), _select(header, rows, V10X_OCCUPATION_COLUMNS, source))


TRANSFORMS: dict[str, Callable[[bytes, str], bytes]] = {
    "esco_v120_skills": skills_to_pack,
    "esco_v120_relations": relations_to_pack,
    "esco_v10x_occupations": v10x_occupations_to_pack,
}


def counts(data: bytes, kind: str, source: str = "file") -> dict[str, int]:
    """The numbers that fix the tasks built on a file: skills (rows, altLabels), relations (rows, distinct
    occupations and skills).

    >>> counts(b'conceptUri,altLabels\\nu1,"a\\nb"\\nu2,\\n', "esco_v120_skills")
    {'rows': 2, 'alt_labels': 2}
    """
    if kind == "esco_v120_skills":
        header, rows = _rows(data, source, ("conceptUri", "altLabels"))
        alt = header.index("altLabels")
        return {"rows": len(rows), "alt_labels": sum(len(split_alt_labels(row[alt])) for row in rows)}
    if kind == "esco_v120_relations":
        header, rows = _rows(data, source, ("occupationUri", "skillUri"))
        occupation, skill = header.index("occupationUri"), header.index("skillUri")
        return {"rows": len(rows), "occupations": len({r[occupation] for r in rows}),
                "skills": len({r[skill] for r in rows})}
    raise ValueError(f"no counts for {kind!r}; known: {sorted(TRANSFORMS)}")
