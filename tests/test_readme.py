"""The README and docs/ document what the code does: every scenario key, a profile that loads, real commands."""

import os
import re
import subprocess
from pathlib import Path

import yaml

from fogsim.sim.profiles import parse_profiles
from fogsim.sim.scenario import parse_scenario, reference

ROOT = Path(__file__).parent.parent
README = (ROOT / "README.md").read_text()
SCENARIOS = (ROOT / "docs" / "scenarios.md").read_text()
ARCHITECTURE = (ROOT / "docs" / "architecture.md").read_text()
# the README and every page of docs/, for the YAML examples they show
DOCS = "\n".join([README] + [p.read_text() for p in sorted((ROOT / "docs").glob("*.md"))])


def yaml_blocks():
    return [yaml.safe_load(b) for b in re.findall(r"```yaml\n(.*?)```", DOCS, flags=re.S)]


def test_every_scenario_key_is_documented():
    missing = [key for key, _, _ in reference() if f"`{key}`" not in SCENARIOS]
    assert not missing, f"docs/scenarios.md's key reference lacks {missing}; regenerate it with `fogsim keys --markdown`"


def test_the_profile_example_loads():
    profiles = [b for b in yaml_blocks() if "fleet" not in b]
    assert profiles
    for block in profiles:
        loaded = parse_profiles(block, "README")
        assert all(p.memory_budget > 0 for p in loaded.values())


def test_the_scenario_example_validates():
    scenarios = [b for b in yaml_blocks() if "fleet" in b]
    assert scenarios
    for block in scenarios:
        assert parse_scenario(block).fleet


def test_quick_start_has_exactly_two_commands():
    section = README.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"```bash\n(.*?)```", section, flags=re.S)
    assert len(commands) == 2
    assert "fogsim run scenarios/quickstart.yaml" in commands[0]
    assert "pytest" in commands[1]


def test_the_test_command_needs_no_sudo_when_root():
    """A root container has no sudo: the command asks for it only when it is not root."""
    section = README.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    command = re.findall(r"```bash\n(.*?)```", section, flags=re.S)[1]
    assert not re.search(r"(^|&&|;)\s*sudo\b", command), "sudo must not be called unconditionally"
    chooser = command.split(";", 1)[0]
    assert chooser.startswith("S=")
    said = subprocess.run(["bash", "-c", f"{chooser}; echo \"[$S]\""], capture_output=True, text=True).stdout.strip()
    assert said == ("[]" if os.getuid() == 0 else "[sudo]")


def test_the_layout_table_names_every_module():
    """docs/architecture.md's layout table matches the tree: every module of fogsim and strategies is named."""
    section = ARCHITECTURE.split("## Layout", 1)[1].split("\n## ", 1)[0]
    root = ROOT
    missing = []
    for package in ("fogsim", "strategies"):
        for path in (root / package).rglob("*.py"):
            if path.name in ("__init__.py", "__main__.py") or path.parent.name == "strategies":
                continue
            if f"{path.name}`" not in section:
                missing.append(str(path.relative_to(root)))
    assert not missing, f"docs/architecture.md's layout table does not name {missing}"


def test_the_readme_is_a_front_door():
    """Under 2,000 words; what a new user needs before the first command; the fast test subset named;
    every page of docs/ linked."""
    assert len(README.split()) < 2000, "reference material belongs in docs/"
    for needed in ("Python 3.11", "CPU", "download.pytorch.org/whl/cpu", "python3 -m venv", '-m "not slow"',
                   "notebooks/"):
        assert needed in README, needed
    assert "the brief" not in README.lower(), "a document users never see"
    for page in sorted((ROOT / "docs").glob("*.md")):
        assert f"docs/{page.name}" in README, f"the README does not link docs/{page.name}"
    for target in re.findall(r"\]\(((?:docs/)?[\w./-]+\.md)(?:#[\w-]*)?\)", DOCS):
        assert (ROOT / target).is_file() or (ROOT / "docs" / target).is_file(), target
