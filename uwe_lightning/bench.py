"""``python -m uwe_lightning.bench``: see :mod:`uwe_lightning.cli.bench`."""
from uwe_lightning.cli.bench import main

if __name__ == "__main__":
    main()
