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


def _attach_declared_fields():
    # the studies whose result fields are declared in fields.py (by name and version) carry them like the others
    from validation.studies.fields import RESULT_FIELDS
    from validation.study import REGISTRY

    for (name, version), fields in RESULT_FIELDS.items():
        study = REGISTRY.get(name)
        if study is not None and study.version == version and not study.result_fields:
            study.result_fields = dict(fields)


_attach_declared_fields()
