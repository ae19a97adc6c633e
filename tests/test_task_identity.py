"""Every registered task builds exactly what the golden record says (tests/fixtures/task_digests/), on the mini
pack and on the real pack where present, and the tiny BERT scores the recorded MAP / RP@10 on the mini pack.

The record was written before the task files were refactored onto :class:`~uwe_lightning.workbench.tasks.base.
RankingTask` (issue 34), so this is the proof that the refactor changed no query, target, label, exclusion or meta
entry, hence no model's number. An intended change of a task rewrites the record (:mod:`tests.helpers.task_digests`
says how) in the same commit.
"""

from __future__ import annotations

import json

import pytest

from tests.helpers.task_digests import RECORDS, mini_pack_with_skillsim, task_records, tiny_metrics
from uwe_lightning.esco import clear_cache

HOW_TO_REWRITE = "if the change is intended: python -m tests.helpers.task_digests --write (and say why in the commit)"


def _differences(got: dict, want: dict) -> list[str]:
    """One line per ``task/split`` whose record differs, naming the fields."""
    lines = []
    for key in sorted(set(got) | set(want)):
        a, b = got.get(key, {}), want.get(key, {})
        fields = sorted(f for f in set(a) | set(b) if a.get(f) != b.get(f))
        if fields:
            lines.append(f"{key}: {', '.join(fields)} ({ {f: (a.get(f), b.get(f)) for f in fields} })")
    return lines


def _record(name: str) -> dict:
    return json.loads((RECORDS / f"{name}.json").read_text())


@pytest.fixture(scope="module")
def mini_pack():
    clear_cache()
    with mini_pack_with_skillsim() as pack:
        yield pack
    clear_cache()


def test_every_task_builds_the_recorded_splits_on_the_mini_pack(mini_pack):
    got, want = task_records(mini_pack), _record("mini")["tasks"]
    assert not _differences(got, want), "\n".join([*_differences(got, want), HOW_TO_REWRITE])


def test_the_tiny_model_scores_the_recorded_numbers_on_the_mini_pack(mini_pack, tiny_model_dir):
    # Ranks decide MAP and RP@10; the closest score to a positive's in these splits is 2.8e-5 away (at ~0.94),
    # 300x the float32 rounding of any kernel, so the ranks, hence the metrics, are the same on every CPU.
    got = tiny_metrics(tiny_model_dir, mini_pack, _record("mini")["tasks"])
    want = _record("mini")["tiny"]
    assert set(got) == set(want)
    for key, row in want.items():
        assert got[key]["n_queries"] == row["n_queries"], key
        assert got[key]["map"] == pytest.approx(row["map"], rel=1e-12), key
        assert got[key]["rp@10"] == pytest.approx(row["rp@10"], rel=1e-12), key


@pytest.mark.data
@pytest.mark.slow  # every task's splits rebuilt from the real pack (~20 s); the mini pack's recorded splits are checked by default
def test_every_task_builds_the_recorded_splits_on_the_real_pack(real_data_dir):
    clear_cache()
    got, want = task_records(real_data_dir), _record("real")["tasks"]
    assert not _differences(got, want), "\n".join([*_differences(got, want), HOW_TO_REWRITE])
