"""Installing us where the original's subclass packages are used.

In a fresh venv, ``pip install <this repo> jupyterhub-outpostspawner==2.2.13
jupyterhub-unicorespawner==2.1.7`` (with dependencies, from the package index) must give OUR
``forwardbasespawner`` (the subclasses require ``jupyterhub-forwardbasespawner>=2.1.2``, which is
our distribution's name now), and nothing of the original's files.

And the "two copies" guard: when files of the original are found next to ours in the same
``forwardbasespawner/`` directory (the original installed, then ours over it without uninstalling,
e.g. ``pip install --ignore-installed``), importing fails with an ImportError that names both and
says how to fix it.

Everything the tests need is fetched by pip itself (its cache makes reruns quick).
"""

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile

import pytest

pytestmark = pytest.mark.slow

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SUBCLASS_PACKAGES = ["jupyterhub-outpostspawner==2.2.13", "jupyterhub-unicorespawner==2.1.7"]
ORIGINAL = "jupyterhub-forwardbasespawner==2.1.2"
# files only the original has (its module layout); none may be installed with us
ORIGINAL_ONLY = {"forward.py", "api_events.py", "api_setup_tunnel.py", "api_list_servers.py",
                 "api_sshnode_restarted.py", "_version.py"}  # fmt: skip


def our_version():
    with open(os.path.join(REPO, "forwardbasespawner", "__init__.py")) as f:
        return re.search(r'^__version__ = "([^"]+)"', f.read(), re.M).group(1)


def clean_env():
    """The environment for a venv's python: nothing of this repo on its path."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["PYTHONNOUSERSITE"] = "1"
    return env


def pip(venv, *args, cwd):
    """pip of this interpreter acting on ``venv`` (no pip bootstrap in each new venv)."""
    python = os.path.join(venv, "bin", "python")
    result = subprocess.run(
        [sys.executable, "-m", "pip", "--python", python, "--disable-pip-version-check", *args],
        cwd=cwd, env=clean_env(), capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, f"pip {' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    return result.stdout


def run_python(venv, code, cwd, extra_env=None):
    env = clean_env()
    env.update(extra_env or {})
    return subprocess.run([os.path.join(venv, "bin", "python"), "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def new_venv(path):
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True, timeout=120)
    return str(path)


def site_packages(venv, cwd):
    result = run_python(venv, "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("install")


@pytest.fixture(scope="module")
def installed(workdir):
    """A fresh venv with this repo and the original's two subclass packages, as a user installs them."""
    venv = new_venv(workdir / "venv")
    pip(venv, "install", REPO, *SUBCLASS_PACKAGES, cwd=workdir)
    return venv


@pytest.fixture(scope="module")
def original_wheel(workdir):
    """The original's wheel, downloaded once (from pip's cache when it has it)."""
    target = workdir / "original"
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--no-deps", "--only-binary", ":all:",
         ORIGINAL, "-d", str(target)],
        check=True, cwd=workdir, env=clean_env(), capture_output=True, timeout=600,
    )  # fmt: skip
    (wheel,) = [p for p in target.iterdir() if p.name.endswith(".whl")]
    return str(wheel)


@pytest.fixture(scope="module")
def our_wheel(workdir):
    target = workdir / "ours"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--disable-pip-version-check", "--no-deps", REPO, "-w", str(target)],
        check=True, cwd=workdir, env=clean_env(), capture_output=True, timeout=600,
    )  # fmt: skip
    (wheel,) = [p for p in target.iterdir() if p.name.endswith(".whl")]
    return str(wheel)


def test_installed_package_is_ours(installed, workdir):
    site = site_packages(installed, workdir)
    package = os.path.join(site, "forwardbasespawner")
    files = set(os.listdir(package))
    assert {"__init__.py", "spawner.py", "ssh", "api", "utils.py"} <= files, sorted(files)
    assert os.path.isfile(os.path.join(package, "ssh", "tunnels.py"))
    assert not files & ORIGINAL_ONLY, f"files of the original installed with us: {sorted(files & ORIGINAL_ONLY)}"
    # one distribution owns the directory: ours
    infos = sorted(n for n in os.listdir(site) if n.lower().startswith("jupyterhub_forwardbasespawner"))
    assert infos == [f"jupyterhub_forwardbasespawner-{our_version()}.dist-info"], infos


def test_pip_show_reports_our_version(installed, workdir):
    shown = pip(installed, "show", "jupyterhub-forwardbasespawner", cwd=workdir)
    fields = dict(line.split(": ", 1) for line in shown.splitlines() if ": " in line)
    assert fields["Name"] == "jupyterhub-forwardbasespawner"
    assert fields["Version"] == our_version()
    required_by = {name.strip() for name in fields.get("Required-by", "").split(",")}
    assert {"jupyterhub-outpostspawner", "jupyterhub-unicorespawner"} <= required_by, fields
    # and pip sees no broken requirement among what it installed
    pip(installed, "check", cwd=workdir)


def test_subclass_packages_import_on_our_base(installed, workdir):
    code = """
import json, os
import outpostspawner, unicorespawner, forwardbasespawner
print(json.dumps({
    "file": forwardbasespawner.__file__,
    "version": forwardbasespawner.__version__,
    "module": forwardbasespawner.ForwardBaseSpawner.__module__,
    "outpost": issubclass(outpostspawner.OutpostSpawner, forwardbasespawner.ForwardBaseSpawner),
    "unicore": issubclass(unicorespawner.UnicoreSpawner, forwardbasespawner.ForwardBaseSpawner),
}))
"""
    result = run_python(installed, code, workdir)
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout.strip().splitlines()[-1])
    assert info["file"].startswith(site_packages(installed, workdir)), info  # not this repo's source
    assert info["version"] == our_version()
    assert info["module"] == "forwardbasespawner.spawner"
    assert info["outpost"] and info["unicore"], info


@pytest.fixture(scope="module")
def two_copies(workdir, installed, original_wheel, our_wheel):
    """A venv where the original was installed first and ours over it without uninstalling it
    (``pip install --ignore-installed``): one directory, files of both, two dist-infos."""
    venv = new_venv(workdir / "two-copies")
    pip(venv, "install", "--no-deps", original_wheel, cwd=workdir)
    pip(venv, "install", "--no-deps", "--ignore-installed", our_wheel, cwd=workdir)
    site = site_packages(venv, workdir)
    # the dependencies from the complete venv, after this venv's own packages
    with open(os.path.join(site, "zz_dependencies.pth"), "w") as f:
        f.write(site_packages(installed, workdir) + "\n")
    return venv, os.path.join(site, "forwardbasespawner")


def test_mixed_install_is_what_the_guard_sees(two_copies):
    _, package = two_copies
    files = set(os.listdir(package))
    assert "spawner.py" in files and "forward.py" in files, sorted(files)


def assert_guard_message(message, package):
    assert "jupyterhub-forwardbasespawner" in message, message
    assert os.path.realpath(package) in message or package in message, message  # where
    assert "forward.py" in message, message  # what was found
    assert "pip" in message and ("uninstall" in message or "--force-reinstall" in message), message  # the fix


def test_two_copies_guard_after_ignore_installed(two_copies, workdir):
    venv, package = two_copies
    result = run_python(venv, "import forwardbasespawner", workdir)
    assert result.returncode != 0, "importing a directory with both packages' files must fail"
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError:"), result.stderr[-3000:]
    message = result.stderr[result.stderr.rfind("ImportError:") :]
    assert_guard_message(message, package)
    # names both: the original's version and ours
    assert "2.1.2" in message and our_version() in message, message


def test_two_copies_guard_one_stray_file(installed, workdir, original_wheel, tmp_path):
    """Only the original's forward.py next to a copy of our installed package."""
    source = os.path.join(site_packages(installed, workdir), "forwardbasespawner")
    copy_root = tmp_path / "site"
    package = copy_root / "forwardbasespawner"
    shutil.copytree(source, package, ignore=shutil.ignore_patterns("__pycache__"))
    with zipfile.ZipFile(original_wheel) as wheel:
        (package / "forward.py").write_bytes(wheel.read("forwardbasespawner/forward.py"))
    result = run_python(installed, "import forwardbasespawner", workdir, {"PYTHONPATH": str(copy_root)})
    assert result.returncode != 0, "importing a directory with the original's forward.py must fail"
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError:"), result.stderr[-3000:]
    assert_guard_message(result.stderr[result.stderr.rfind("ImportError:") :], str(package))


def test_clean_copy_imports(installed, workdir, tmp_path):
    """The guard fires on the original's files only: a clean copy of ours imports."""
    source = os.path.join(site_packages(installed, workdir), "forwardbasespawner")
    copy_root = tmp_path / "site"
    shutil.copytree(source, copy_root / "forwardbasespawner", ignore=shutil.ignore_patterns("__pycache__"))
    result = run_python(installed, "import forwardbasespawner; print(forwardbasespawner.__file__)", workdir, {"PYTHONPATH": str(copy_root)})
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().startswith(str(copy_root)), result.stdout
