"""The ranking service against its own OpenAPI schema, by schemathesis (issue 26): requests generated from the
schema (valid ones must be answered 2xx, invalid ones refused with a 4xx; 413 counts as a refusal) and every answer
checked against it (status codes, content types, headers, bodies, methods), by the ``schemathesis run`` CLI with
every check on. A real uvicorn server on 127.0.0.1, the tiny model, three target spaces. Bounded: examples per
operation (``UWE_SCHEMATHESIS_EXAMPLES``, default 60) and the whole run (``UWE_SCHEMATHESIS_SECONDS``, default 60;
the fuzzing phase fills what the examples and coverage phases leave, ~6,000 requests in 240 s on 2 cores). Slow:
run by ``make test-slow``. The CLI, not schemathesis' pytest plugin: the plugin's lazy fixture schemas fail
under pytest 9 (``Function`` has no ``_nodeid``)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
if importlib.util.find_spec("schemathesis") is None:  # not imported here: the CLI runs in its own process
    pytest.skip("schemathesis is not installed (pip install -e '.[dev]')", allow_module_level=True)

from tests.helpers.paths import MINI_DATA  # noqa: E402
from tests.test_serve import FILE_TARGETS  # noqa: E402
from tests.test_serve_hostile import LIMITS, running  # noqa: E402
from uwe_lightning.ranking.ranker import Ranker  # noqa: E402
from uwe_lightning.ranking.targets import DIRECTIONS, load_targets  # noqa: E402
from uwe_lightning.service.app import ServedSpace, create_app  # noqa: E402

EXAMPLES = int(os.environ.get("UWE_SCHEMATHESIS_EXAMPLES", "60"))
MAX_TIME = int(os.environ.get("UWE_SCHEMATHESIS_SECONDS", "60"))


@pytest.fixture(scope="module")
def server_url(tiny_model_dir: Path) -> Iterator[str]:
    ranker = Ranker.from_pretrained(str(tiny_model_dir), scorer="maxsim", device="cpu")
    spaces = {}
    for name in ("esco_skills", "esco_occupations"):
        target = load_targets(name, MINI_DATA)
        spaces[name] = ServedSpace(name, target.source, target.ids, target.texts, ranker.index(target.texts))
    spaces["file"] = ServedSpace("file", "file", [f"line:{i}" for i in range(1, 9)], FILE_TARGETS,
                                 ranker.index(FILE_TARGETS))
    app = create_app(ranker, spaces, directions=DIRECTIONS, limits=LIMITS, max_batch_queries=16)
    with running(app) as url:
        yield url


def test_the_service_answers_as_its_schema_says(server_url: str, tmp_path: Path) -> None:
    config = tmp_path / "schemathesis.toml"  # 413 (over a size limit) is a rejection too
    config.write_text('[checks.negative_data_rejection]\nexpected-statuses = ["400", "401", "403", "404", "405", '
                      '"406", "409", "413", "415", "422", "428", "429", "5xx"]\n')
    proc = subprocess.run(
        [sys.executable, "-m", "schemathesis.cli", "--no-color", "--config-file", str(config),
         "run", f"{server_url}/openapi.json", "--checks", "all", "--max-examples", str(EXAMPLES),
         "--max-time", str(MAX_TIME), "--seed", "26", "--workers", "1", "--request-timeout", "30",
         "--generation-database", "none", "--output-truncate", "true"],
        capture_output=True, text=True, timeout=MAX_TIME + 120, cwd=tmp_path, env={**os.environ, "NO_COLOR": "1"},
    )
    print(proc.stdout[-1500:])
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
