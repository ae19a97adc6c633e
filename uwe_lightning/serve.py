"""``python -m uwe_lightning.serve``: see :mod:`uwe_lightning.cli.serve`."""

from uwe_lightning.cli.serve import main

if __name__ == "__main__":
    main()
