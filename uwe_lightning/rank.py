"""``python -m uwe_lightning.rank``: see :mod:`uwe_lightning.cli.rank`."""

from uwe_lightning.cli.rank import main

if __name__ == "__main__":
    main()
