"""What a WorkBench split is: (query texts, target space, positive target indices per query).

Optional per-query targets to exclude from the ranking (SkillSim excludes the query itself). Models and
metrics never see how a split was built; tasks never see a model.
"""

from __future__ import annotations

from dataclasses import dataclass, field

SPLITS = ("val", "test")


class TaskUnavailable(RuntimeError):
    """The task's data is not present; reported as unavailable, never as a zero."""


@dataclass
class RankingDataset:
    task: str
    split: str
    queries: list[str]
    targets: list[str]
    labels: list[list[int]]  # positive target indices per query
    exclude: list[list[int]] | None = None  # per query: target indices removed from its ranking
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.targets:
            raise ValueError(f"{self.task}/{self.split}: empty target space")
        if len(self.queries) != len(self.labels):
            raise ValueError(f"{self.task}/{self.split}: {len(self.queries)} queries but {len(self.labels)} label rows")
        if self.exclude is not None and len(self.exclude) != len(self.queries):
            raise ValueError(f"{self.task}/{self.split}: exclude has {len(self.exclude)} rows for {len(self.queries)} queries")
        n = len(self.targets)
        for i, row in enumerate(self.labels):
            if any(t < 0 or t >= n for t in row):
                raise ValueError(f"{self.task}/{self.split}: query {i} has a label outside the {n} targets")

    @property
    def n_queries(self) -> int:
        return len(self.queries)

    @property
    def n_targets(self) -> int:
        return len(self.targets)
