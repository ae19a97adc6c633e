"""Every optional package goes through ``uwe_lightning.io.require``: a missing one is one line naming the pip
extra that brings it (tested with the package hidden from import)."""

from __future__ import annotations

import sys

import pytest
import tomllib

from uwe_lightning.io import EXTRA_OF, MissingDependencyError, require
from uwe_lightning.paths import REPO_DIR

EXTRAS = tomllib.loads((REPO_DIR / "pyproject.toml").read_text())["project"]["optional-dependencies"]


@pytest.mark.parametrize("module", sorted(EXTRA_OF))
def test_a_hidden_package_names_its_extra(module, monkeypatch):
    monkeypatch.setitem(sys.modules, module, None)  # import raises ImportError, as when not installed
    with pytest.raises(MissingDependencyError) as err:
        require(module, "this feature")
    line = str(err.value)
    assert "\n" not in line and f"pip install 'uwe_lightning[{EXTRA_OF[module]}]'" in line
    assert EXTRA_OF[module] in EXTRAS, f"extra {EXTRA_OF[module]!r} is not in pyproject.toml"


def test_a_broken_dependency_of_an_installed_package_keeps_its_own_error(tmp_path, monkeypatch):
    """The package is installed but one of its own imports fails: that error, not 'install the extra'."""
    (tmp_path / "pkg_with_broken_dep").mkdir()
    (tmp_path / "pkg_with_broken_dep" / "__init__.py").write_text("import a_dependency_that_is_not_there\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ImportError) as err:
        require("pkg_with_broken_dep", "x")
    assert not isinstance(err.value, MissingDependencyError)
    assert err.value.name == "a_dependency_that_is_not_there"


def test_the_entry_points_use_it(monkeypatch):
    from uwe_lightning.model.st_encoder import load_sentence_transformer
    from uwe_lightning.ranking import prefilter

    monkeypatch.setitem(sys.modules, "sentence_transformers", None)
    with pytest.raises(MissingDependencyError, match=r"uwe_lightning\[st\]"):
        load_sentence_transformer("any")
    monkeypatch.setitem(sys.modules, "faiss", None)
    with pytest.raises(MissingDependencyError, match=r"prefilter needs the 'faiss' package.*uwe_lightning\[ann\]"):
        prefilter._require("faiss")


#: Extras that are not in [all], by design (pyproject.toml says why): pylate pins another torch, docs is tooling.
OUTSIDE_ALL = {"pylate", "docs"}


def test_all_brings_every_extra_a_feature_names():
    (line,) = EXTRAS["all"]
    assert set(EXTRA_OF.values()) - OUTSIDE_ALL <= set(line.split("[", 1)[1].rstrip("]").split(","))


def test_every_extra_has_a_package_the_hidden_import_test_covers():
    """Each feature extra maps from at least one package in EXTRA_OF (so the parametrised test above hides it);
    dev and all are bundles, peers the packages of make bench-peers (st + ann)."""
    assert set(EXTRAS) - {"dev", "all", "peers"} == set(EXTRA_OF.values())
    for extra in set(EXTRA_OF.values()):
        packages = " ".join(EXTRAS[extra]).replace("-", "_").lower()
        assert any(m.split(".")[0].lower() in packages
                   for m, e in EXTRA_OF.items() if e == extra), extra


def test_the_enrichment_client_names_the_enrich_extra(monkeypatch):
    from uwe_lightning.enrichment.client import ChatClient, Endpoint

    monkeypatch.setitem(sys.modules, "openai", None)
    with pytest.raises(MissingDependencyError) as err:
        ChatClient(Endpoint.resolve("http://127.0.0.1:9/v1", ""))
    assert str(err.value) == ("the enrichment client (python -m uwe_lightning.enrich) needs the 'openai' package, "
                              "which is not installed: pip install 'uwe_lightning[enrich]' (in a source checkout: "
                              "pip install -e '.[enrich]')")
