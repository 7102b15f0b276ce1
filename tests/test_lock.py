"""The locks in requirements/ hold what pyproject.toml asks for, and the image and the control
host install them (the image's pip commands: tests/image/test_image_settings.py).

Which lock holds which extras is read from the Makefile's ``lock`` target (the commands that
compile them), so the mapping has one source. A requirement of ``pyproject.toml`` missing
from a lock, or pinned outside its range, means someone changed ``pyproject.toml`` without
``make lock`` (requirements/README.md); the install would then not be what the suite ran with.
"""

from __future__ import annotations

import ast
import re
import shlex
import sys
import tomllib
from dataclasses import dataclass
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from agent_image.image_settings import LOCKS

REPO = Path(__file__).resolve().parents[1]
REQUIREMENTS = REPO / "requirements"
# Every install runs CPython 3.11 on x86_64 Linux (the Makefile compiles with the same).
MARKER_ENV = {
    "python_version": "3.11", "python_full_version": "3.11.0", "implementation_name": "cpython",
    "platform_python_implementation": "CPython", "sys_platform": "linux", "os_name": "posix",
    "platform_system": "Linux", "platform_machine": "x86_64", "extra": "",
}


@dataclass(frozen=True)
class LockTarget:
    """One ``uv pip compile`` command of the Makefile's ``lock`` target."""

    output: str
    inputs: tuple[str, ...]
    extras: tuple[str, ...]
    constraints: tuple[str, ...]


@dataclass(frozen=True)
class Pin:
    """One pinned package of a lock."""

    version: str
    hashes: tuple[str, ...]


def lock_targets(makefile: str) -> dict[str, LockTarget]:
    """The ``lock`` recipe's compile commands, by output file name (``test.txt``...)."""
    recipe = makefile.split("\nlock:", 1)[1].split("\n\n", 1)[0].replace("\\\n", " ")
    targets = {}
    for line in recipe.splitlines():
        if "$(UV_COMPILE)" not in line:
            continue
        words = shlex.split(line.split("$(UV_COMPILE)", 1)[1])
        options: dict[str, list[str]] = {"--extra": [], "-c": [], "-o": []}
        inputs = []
        while words:
            word = words.pop(0)
            if word in options:
                options[word].append(words.pop(0))
            else:
                inputs.append(word)
        (output,) = options["-o"]
        targets[Path(output).name] = LockTarget(
            Path(output).name, tuple(inputs), tuple(options["--extra"]), tuple(options["-c"]))
    return targets


def parse_lock(text: str) -> dict[str, Pin]:
    """``{canonical name: Pin}`` of a lock written by ``uv pip compile --generate-hashes``."""
    pins: dict[str, Pin] = {}
    for raw in text.replace("\\\n", " ").splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        spec, *options = line.split()
        requirement = Requirement(spec)
        (specifier,) = requirement.specifier
        assert specifier.operator == "==", f"{spec} is not pinned"
        name = canonicalize_name(requirement.name)
        pins[name] = Pin(specifier.version, tuple(
            option.removeprefix("--hash=sha256:") for option in options
            if option.startswith("--hash=sha256:")))
    return pins


def wanted(target: LockTarget, pyproject: str, repo: Path = REPO) -> list[Requirement]:
    """What ``target`` must satisfy: the project's base requirements and its extras' when it
    compiles ``pyproject.toml``, plus every ``.in`` file's lines; markers for 3.11 Linux."""
    project = tomllib.loads(pyproject)["project"]
    lines: list[str] = []
    if "pyproject.toml" in target.inputs:
        lines += project["dependencies"]
        for extra in target.extras:
            lines += project["optional-dependencies"][extra]
    for source in target.inputs:
        if source.endswith(".in"):
            lines += [line.split("#", 1)[0].strip()
                      for line in (repo / source).read_text().splitlines()]
    requirements = [Requirement(line) for line in lines if line]
    return [r for r in requirements if r.marker is None or r.marker.evaluate(MARKER_ENV)]


def disagreements(target: LockTarget, pyproject: str, lock: str) -> list[str]:
    """Requirements of ``target`` the ``lock`` text misses or pins outside their range."""
    pins = parse_lock(lock)
    problems = []
    for requirement in wanted(target, pyproject):
        pin = pins.get(canonicalize_name(requirement.name))
        if pin is None:
            problems.append(f"{requirement} is not in {target.output}")
        elif not requirement.specifier.contains(pin.version, prereleases=True):
            problems.append(f"{requirement} but {target.output} pins {pin.version}")
    return problems


TARGETS = lock_targets((REPO / "Makefile").read_text())
PYPROJECT = (REPO / "pyproject.toml").read_text()


def read_lock(name: str) -> str:
    return (REQUIREMENTS / name).read_text()


def test_the_makefile_compiles_every_lock_in_requirements():
    assert set(TARGETS) == {path.name for path in REQUIREMENTS.glob("*.txt")}
    assert TARGETS["agent.txt"].extras == ("agent",)
    assert "requirements/control-host.in" in TARGETS["control.txt"].inputs


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_every_requirement_of_pyproject_is_pinned_inside_its_range(name):
    assert disagreements(TARGETS[name], PYPROJECT, read_lock(name)) == []


@pytest.mark.parametrize("name", sorted(n for n, t in TARGETS.items() if t.constraints))
def test_a_lock_constrained_by_test_txt_pins_what_the_suite_ran_with(name):
    assert TARGETS[name].constraints == ("requirements/test.txt",)
    suite = parse_lock(read_lock("test.txt"))
    differing = {package: (pin.version, suite[package].version if package in suite else None)
                 for package, pin in parse_lock(read_lock(name)).items()
                 if package not in suite or suite[package].version != pin.version}
    assert differing == {}


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_every_pin_has_a_sha256_hash(name):
    pins = parse_lock(read_lock(name))
    assert pins
    assert [package for package, pin in pins.items()
            if not pin.hashes or not all(re.fullmatch(r"[0-9a-f]{64}", h) for h in pin.hashes)] == []


def test_a_dependency_added_without_make_lock_is_caught():
    base = PYPROJECT.replace('dependencies = [\n', 'dependencies = [\n    "left-pad>=1.0",\n', 1)
    assert base != PYPROJECT
    for name, target in TARGETS.items():
        problems = disagreements(target, base, read_lock(name))
        if "pyproject.toml" in target.inputs:
            assert problems == [f"left-pad>=1.0 is not in {name}"]
        else:
            assert problems == []


def test_a_range_moved_past_the_pin_is_caught():
    moved = PYPROJECT.replace('"sentry-sdk>=2.0,<3",', '"sentry-sdk>=3.0",', 1)
    assert moved != PYPROJECT
    problems = disagreements(TARGETS["agent.txt"], moved, read_lock("agent.txt"))
    assert len(problems) == 1 and problems[0].startswith("sentry-sdk>=3.0 but agent.txt pins 2.")


def test_markers_leave_out_what_linux_on_3_11_does_not_install():
    marked = PYPROJECT.replace('dependencies = [\n', 'dependencies = [\n'
                               '    "pywin32>=300; sys_platform == \'win32\'",\n', 1)
    assert disagreements(TARGETS["agent.txt"], marked, read_lock("agent.txt")) == []


@pytest.mark.parametrize(("extras", "name"), sorted(LOCKS.items()))
def test_the_image_installs_the_lock_compiled_with_its_extras(extras, name):
    assert set(TARGETS[name].extras) == set(extras)
    assert "pyproject.toml" in TARGETS[name].inputs


def test_the_control_role_installs_its_lock_with_hashes_and_the_wheel_without_dependencies():
    role = REPO / "roles/control"
    defaults = yaml.safe_load((role / "defaults/main.yml").read_text())
    lock = defaults["control_lock"].replace("{{ role_path }}", str(role))
    assert Path(lock).resolve() == REQUIREMENTS / "control.txt"
    assert set(TARGETS["control.txt"].extras) == {"control"}
    assert "gunicorn" in parse_lock(read_lock("control.txt"))
    pips = [task["ansible.builtin.pip"] for task in yaml.safe_load((role / "tasks/app.yml").read_text())
            if "ansible.builtin.pip" in task]
    assert [p.get("requirements") for p in pips] == [
        "{{ control_prefix }}/dist/{{ control_lock | basename }}", None]
    assert pips[0]["extra_args"].split() == ["--require-hashes", "--no-deps"]
    assert pips[1]["extra_args"] == "--no-deps"
    assert pips[1]["name"] == "{{ control_prefix }}/dist/{{ control_wheel | basename }}"


def test_the_rehearsal_image_is_rebuilt_when_its_lock_changes(tmp_path, monkeypatch):
    from rehearsal.image import dependency_key

    before = dependency_key()
    (tmp_path / "agent.txt").write_text(read_lock("agent.txt").replace("\n", "\n\n", 1))
    monkeypatch.setattr("agent_image.image_settings.REQUIREMENTS_DIR", tmp_path)
    assert dependency_key() != before


def third_party_imports(*packages: str) -> dict[str, set[str]]:
    """``{top-level module: files}`` of every absolute import outside the standard library and
    the project in ``packages`` (directories of this repository), function-local ones included."""
    first_party = {p.name for p in REPO.iterdir() if (p / "__init__.py").exists()} | {"bench"}
    found: dict[str, set[str]] = {}
    for package in packages:
        for path in (REPO / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                         else [node.module] if isinstance(node, ast.ImportFrom) and node.module
                         and not node.level else [])
                for name in names:
                    top = name.split(".")[0]
                    if top not in first_party and top not in sys.stdlib_module_names | {"__future__"}:
                        found.setdefault(top, set()).add(str(path.relative_to(REPO)))
    return found


def test_the_control_host_lock_holds_everything_the_control_plane_imports():
    # The control host installs control.txt with --no-deps: a module missing from it is an
    # ImportError in production (gunicorn, `hermes worker` provisioning, the CLI), never in CI.
    locked = set(parse_lock(read_lock("control.txt")))
    distributions = packages_distributions()
    missing = {module: sorted(files) for module, files in third_party_imports("control", "wire", "cli").items()
               if not any(canonicalize_name(d) in locked for d in distributions.get(module, [module]))}
    assert missing == {}
