"""Built-in studies; importing this package registers them in :data:`validation.study.REGISTRY`.

Each submodule holds one family of studies and registers them with
:func:`validation.study.register` at import time.
"""

import importlib

for _module in ("rbm", "estimators", "dynamics", "cost", "discretisation"):
    try:
        importlib.import_module(f"validation.studies.{_module}")
    except ModuleNotFoundError as err:  # a family not written yet
        if err.name != f"validation.studies.{_module}":
            raise
