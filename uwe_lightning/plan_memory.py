"""``python -m uwe_lightning.plan_memory``: see :mod:`uwe_lightning.cli.plan_memory`."""

from uwe_lightning.cli.plan_memory import main

if __name__ == "__main__":
    main()
