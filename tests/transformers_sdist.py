"""transformers' own common model tests (`ModelTesterMixin`, `ConfigTester`), taken from the transformers
sdist on PyPI that matches the INSTALLED version, so a transformers upgrade brings its new tests along.

The sdist is downloaded once at test time (PyPI's JSON API, sha256-checked) and its top-level
`tests/*.py` are extracted to `<CACHE_ROOT>/transformers-sdist/<version>/`; nothing of transformers is
committed here. The sdist ships only the top-level test modules, not the sub-packages that
`test_modeling_common.py` / `test_configuration_common.py` import names from; `_MISSING` below supplies
those three names and what each one does for us.
"""

from __future__ import annotations

import hashlib
import importlib
import io
import json
import sys
import tarfile
import types
import urllib.parse
import urllib.request
from pathlib import Path

import transformers

from modeling_sparse_clip.atomic import atomic_dir
from modeling_sparse_clip.constants import CACHE_ROOT

PYPI_JSON = "https://pypi.org/pypi/transformers/json"
PACKAGE = "transformers_sdist_tests"  # the extracted tests/ folder, importable under this name


class _ExportTesterMixin:
    """Stands in for `tests/exporters/test_export.py::ExportTesterMixin` (the base of `ModelTesterMixin`),
    which the sdist does not ship: the torch.export/ONNX tests it adds are therefore not run here."""


class _GenerationTesterMixin:
    """Stands in for `tests/generation/test_utils.py::GenerationTesterMixin`, which `ModelTesterMixin` only
    uses in `issubclass` checks (a tester of a model that cannot generate must not inherit it)."""


class _UnavailableKwargs(dict):
    """Stands in for `tests/utils/test_configuration_utils.py::config_common_kwargs`. `ConfigTester` reads it
    only for configs without sub-configs (ours has two); should that change, fail loudly, never pass empty."""

    def _missing(self, *args, **kwargs):
        raise RuntimeError("config_common_kwargs is not in the transformers sdist; this ConfigTester check cannot run here")

    __iter__ = items = keys = values = __getitem__ = __deepcopy__ = __len__ = _missing


_MISSING = {
    "exporters.test_export": {"ExportTesterMixin": _ExportTesterMixin},
    "generation.test_utils": {"GenerationTesterMixin": _GenerationTesterMixin},
    "utils.test_configuration_utils": {"config_common_kwargs": _UnavailableKwargs()},
}


def sdist_tests_dir(version: str = transformers.__version__, cache_root: Path = CACHE_ROOT) -> Path:
    """`<cache>/transformers-sdist/<version>` holding `transformers_sdist_tests/` (downloaded on first use)."""
    root = Path(cache_root) / "transformers-sdist" / version
    if (root / PACKAGE / "test_modeling_common.py").exists():
        return root
    with urllib.request.urlopen(PYPI_JSON, timeout=120) as response:
        releases = json.load(response)["releases"]
    sdists = [f for f in releases.get(version, []) if f["packagetype"] == "sdist"]
    if not sdists:
        raise RuntimeError(f"PyPI lists no sdist of transformers {version}")
    url = urllib.parse.urljoin(PYPI_JSON, sdists[0]["url"])
    with urllib.request.urlopen(url, timeout=600) as response:
        data = response.read()
    if hashlib.sha256(data).hexdigest() != sdists[0]["digests"]["sha256"]:
        raise RuntimeError(f"sha256 mismatch for {url}")
    prefix = f"transformers-{version}/tests/"
    with atomic_dir(root) as tmp, tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        package = tmp / PACKAGE
        package.mkdir(parents=True)
        members = [m for m in tar.getmembers() if m.isfile() and m.name.startswith(prefix) and "/" not in m.name[len(prefix):]]
        for member in members:
            (package / member.name[len(prefix):]).write_bytes(tar.extractfile(member).read())
        (package / "__init__.py").touch()
    return root


def common_test_modules(version: str = transformers.__version__):
    """(test_modeling_common, test_configuration_common) of the installed transformers version."""
    root = str(sdist_tests_dir(version))
    if root not in sys.path:
        sys.path.insert(0, root)
    for dotted, names in _MISSING.items():
        parts = f"{PACKAGE}.{dotted}".split(".")
        for i in range(2, len(parts) + 1):
            name = ".".join(parts[:i])
            if name not in sys.modules:
                sys.modules[name] = types.ModuleType(name)
                sys.modules[name].__path__ = []
        vars(sys.modules[f"{PACKAGE}.{dotted}"]).update(names)
    return (importlib.import_module(f"{PACKAGE}.test_modeling_common"), importlib.import_module(f"{PACKAGE}.test_configuration_common"))
