"""``python -m uwe_lightning.export onnx <model dir>``: see :mod:`uwe_lightning.cli.export`."""

from uwe_lightning.cli.export import main

if __name__ == "__main__":
    main()
