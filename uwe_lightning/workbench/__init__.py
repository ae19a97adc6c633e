"""WorkBench: ranking datasets, the task registry, the tasks (one file each), metrics, runner and reports.

Importing this package registers the seven built-in tasks (:mod:`uwe_lightning.workbench.tasks`).
"""

import uwe_lightning.workbench.tasks  # noqa: F401
