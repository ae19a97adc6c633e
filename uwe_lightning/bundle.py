"""``python -m uwe_lightning.bundle pack|unpack|verify``: see :mod:`uwe_lightning.cli.bundle`."""

from uwe_lightning.cli.bundle import main

if __name__ == "__main__":
    main()
