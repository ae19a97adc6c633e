"""``python -m uwe_lightning.train``: see :mod:`uwe_lightning.cli.train`."""

from uwe_lightning.cli.train import main

if __name__ == "__main__":
    main()
