"""``python -m uwe_lightning.campaign budget_minutes=N plan=[...]``: see :mod:`uwe_lightning.cli.campaign`."""

from uwe_lightning.cli.campaign import main

if __name__ == "__main__":
    main()
