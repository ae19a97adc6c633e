"""``python -m uwe_lightning.evaluate``: see :mod:`uwe_lightning.cli.evaluate`.

Importing this module sets the package attribute ``uwe_lightning.evaluate`` to it, over the exported function
:func:`uwe_lightning.workbench.runner.evaluate`; so the module is callable as that function.
"""

import sys
import types

from uwe_lightning.cli.evaluate import main
from uwe_lightning.workbench.runner import evaluate as _evaluate


class _CallableModule(types.ModuleType):
    def __call__(self, *args, **kwargs):
        return _evaluate(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule

if __name__ == "__main__":
    main()
