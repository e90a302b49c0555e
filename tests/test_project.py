"""The project's own metadata tells the truth: Python version, and references to documents."""
import re
import tomllib

from runner import REPO

CODE = [p for pattern in ("train/**/*.py", "models/**/*.py", "launch/**/*.py", "scripts/**/*.py", "launch/*.sh",
                          "launch/*.sbatch", "train/recipes/*.toml", "pyproject.toml", "Dockerfile")
        for p in REPO.glob(pattern)]


def uses(feature: str) -> list[str]:
    return [str(p.relative_to(REPO)) for p in CODE if p.suffix == ".py" and feature in p.read_text()]


def test_requires_python_admits_no_version_the_code_cannot_run_on():
    spec = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    floor = tuple(int(x) for x in re.fullmatch(r">=\s*(\d+)\.(\d+)", spec.strip()).groups())
    assert uses("import tomllib"), "the check below is moot if nothing needs 3.11"
    assert floor >= (3, 11)  # tomllib arrived in 3.11


def test_code_refers_only_to_documents_in_the_repository():
    outside = re.compile(r"DESIGN\.md|STYLE\.md|/work/shared|shared/(?:DESIGN|STYLE)")
    found = [f"{p.relative_to(REPO)}: {m.group(0)}" for p in CODE for m in outside.finditer(p.read_text())]
    assert not found, found
    for p in CODE:  # every docs/ file named in code exists
        for name in re.findall(r"docs/[A-Za-z_]+\.md", p.read_text()):
            assert (REPO / name).is_file(), f"{p.relative_to(REPO)} names {name}"
