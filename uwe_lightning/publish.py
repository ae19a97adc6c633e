"""``python -m uwe_lightning.publish out=DIR ...``: WorkBench as ``datasets`` tables; see :mod:`uwe_lightning.cli.publish`."""

from uwe_lightning.cli.publish import main

if __name__ == "__main__":
    main()
