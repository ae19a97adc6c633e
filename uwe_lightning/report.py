"""``python -m uwe_lightning.report``: see :mod:`uwe_lightning.cli.report`."""

from uwe_lightning.cli.report import main

if __name__ == "__main__":
    main()
