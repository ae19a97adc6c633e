"""``python -m uwe_lightning.data.fetch`` (``make data``): see :mod:`uwe_lightning.cli.fetch`.

A ``python -m`` shim like ``uwe_lightning.train``: it sits at the top of the layering (tests/test_architecture.py),
only its name lives in the data package, where users look for it.
"""

from uwe_lightning.cli.fetch import main

if __name__ == "__main__":
    main()
