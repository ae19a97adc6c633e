"""WorkBench: ranking datasets, the task registry, the tasks (one file each), metrics, runner and reports."""
