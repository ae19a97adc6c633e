"""``python -m uwe_lightning.evaluate``: see :mod:`uwe_lightning.cli.evaluate`."""

from uwe_lightning.cli.evaluate import main

if __name__ == "__main__":
    main()
