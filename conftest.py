"""Collection settings for the checkout: ``--doctest-modules`` imports every module of the package, and the
WorkRB bridge needs the optional ``workrb`` package, so it is skipped where that is not installed."""

import importlib.util

collect_ignore = [] if importlib.util.find_spec("workrb") else ["uwe_lightning/integrations/workrb.py"]
