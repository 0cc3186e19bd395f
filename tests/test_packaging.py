"""The wheel: only the library goes in (no generic top-level packages), with its recipes and metric
modules; the console commands run from a NON-editable install, from any directory."""

import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = ["sparse-clip-train", "sparse-clip-main", "sparse-clip-train-vlm", "sparse-clip-convert-open-clip",
            "sparse-clip-convert-clip", "sparse-clip-publish", "sparse-clip-bench", "sparse-clip-train-sae", "sparse-clip-build-data",
            "sparse-clip-sparsify"]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(ROOT)],
                   check=True, capture_output=True, text=True)
    return next(out.glob("sparse_clip-*.whl"))


def test_the_wheel_holds_the_library_only_with_its_package_data(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    top_level = {n.split("/")[0] for n in names if not n.startswith("sparse_clip-")}
    assert top_level == {"modeling_sparse_clip"}, top_level
    assert "modeling_sparse_clip/recipes/embedded_sparse.json" in names
    assert "modeling_sparse_clip/recipes/paper_vit_b32.yaml" in names
    assert any(n.startswith("modeling_sparse_clip/evaluation/metrics/clarity/") for n in names)
    entry_points = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    for command in COMMANDS:
        assert f"{command} = modeling_sparse_clip.cli." in entry_points


@pytest.mark.slow
def test_commands_run_from_a_non_editable_install_in_another_directory(wheel, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "--no-deps", str(wheel)], check=True)
    # dependencies from this environment (PYTHONPATH does not run its .pth files, so the editable
    # checkout stays out of sight); the package itself only from the wheel
    env = {"PYTHONPATH": sysconfig.get_paths()["purelib"], "PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HF_HUB_OFFLINE": "1"}
    where = subprocess.run([str(venv / "bin" / "python"), "-c", "import modeling_sparse_clip, sys; print(modeling_sparse_clip.__file__)"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, check=True).stdout
    assert str(venv) in where and str(ROOT) not in where
    for command in COMMANDS:
        done = subprocess.run([str(venv / "bin" / command), "--help"], cwd=tmp_path, env=env, capture_output=True, text=True)
        assert done.returncode == 0, (command, done.stderr[-2000:])
        assert "usage" in done.stdout.lower()
    # a shipped recipe resolves by name from anywhere
    recipe = subprocess.run([str(venv / "bin" / "python"), "-c",
                             "from modeling_sparse_clip.recipes import recipe_path; print(recipe_path('embedded_sparse'))"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, check=True).stdout.strip()
    assert recipe.startswith(str(venv)) and Path(recipe).is_file()


def _imports(path: Path) -> set[str]:
    import ast

    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def test_the_library_imports_nothing_from_the_script_folders():
    library = ROOT / "modeling_sparse_clip"
    offenders = {
        str(path.relative_to(ROOT)): sorted(name for name in _imports(path) if name.split(".")[0] in {"training", "conversion", "benchmarks", "spaces", "tests"})
        for path in library.rglob("*.py")
    }
    assert not {k: v for k, v in offenders.items() if v}


def test_the_hub_files_import_only_torch_transformers_and_each_other():
    for name in ("configuration_sparse_clip.py", "modeling_sparse_clip.py"):
        top_level = {module.split(".")[0] for module in _imports(ROOT / "modeling_sparse_clip" / name)}
        # modeling_sparse_clip.publishing is reached lazily inside try/except ImportError (push_to_hub)
        # the standard library is always there; anything else would break `trust_remote_code` loading
        third_party = top_level - set(sys.stdlib_module_names)
        assert third_party <= {"torch", "transformers", "modeling_sparse_clip"}, (name, third_party)
