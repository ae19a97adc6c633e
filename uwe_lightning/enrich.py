"""``python -m uwe_lightning.enrich``: see :mod:`uwe_lightning.cli.enrich`."""

from uwe_lightning.cli.enrich import main

if __name__ == "__main__":
    main()
