"""Code fingerprints come from the imports of the stage a rule runs, not from a list kept by hand."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from leverplus.core.fingerprint import dependency_files, files_digest, package_root, script_entries

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "workflow" / "scripts"
PKG = package_root() / "leverplus"


def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))


def _rel(files, root: Path) -> set[str]:
    return {f.relative_to(root).as_posix() for f in files}


def test_follows_relative_function_level_and_helper_imports(tmp_path):
    _write(tmp_path, {
        "leverplus/__init__.py": "",
        "leverplus/stages/__init__.py": "",
        "leverplus/stages/glue.py": """
            from ..a import f
            from .. import d
            from ..e import unused_here

            LIMIT = d.K

            def _helper():
                return f() + LIMIT

            def run():
                return _helper()

            def other():
                from ..late import g
                return unused_here() + g()
            """,
        "leverplus/a.py": """
            def f():
                from .b.c import y  # function-level, relative, two levels down
                return y
            """,
        "leverplus/b/__init__.py": "",
        "leverplus/b/c.py": "import leverplus.deep as deep\ny = 1\n",
        "leverplus/deep.py": "",
        "leverplus/d.py": "K = 1\n",
        "leverplus/e.py": "",
        "leverplus/late.py": "",
        "leverplus/unused.py": "",
        "script.py": "from leverplus.stages.glue import run\nimport numpy\n",
        "script_other.py": "from leverplus.stages.glue import other\n",
    })
    run = _rel(dependency_files(script_entries(tmp_path / "script.py", tmp_path), tmp_path), tmp_path)
    assert run == {f"leverplus/{p}" for p in (
        "__init__.py", "stages/__init__.py", "stages/glue.py", "a.py", "b/__init__.py", "b/c.py", "deep.py", "d.py")}
    other = _rel(dependency_files(script_entries(tmp_path / "script_other.py", tmp_path), tmp_path), tmp_path)
    assert {"leverplus/e.py", "leverplus/late.py"} <= other and "leverplus/a.py" not in other


def _files(script: str) -> set[str]:
    root = package_root()
    return _rel(dependency_files(script_entries(SCRIPTS / f"{script}.py", root), root), PKG)


def test_train_selector_reaches_selector_training_and_its_glue():
    files = _files("train_selector")
    assert {"tracks/vqa/icd/selector_training.py", "tracks/vqa/icd/selectors/__init__.py", "tracks/vqa/icd/selectors/v2_lora.py",
            "tracks/vqa/stages/selector.py", "core/runner.py"} <= files


def test_each_library_module_reaches_only_the_stages_that_run_it():
    reach = {s.stem: _files(s.stem) for s in SCRIPTS.glob("*.py")}
    users = lambda rel: {s for s, files in reach.items() if rel in files}  # noqa: E731
    assert users("tracks/vqa/icd/infoscore.py") == {"beam_search"}
    assert users("tracks/vqa/icd/checkpoint.py") == {"beam_search", "beam_rewards"}
    assert users("tracks/vqa/icd/selector_training.py") == {"train_selector", "infer"}
    # compare_versions reads the per-question results through report/aggregate's loaders (module-level import)
    assert users("tracks/vqa/report/aggregate.py") == users("tracks/vqa/report/plots.py") == {"aggregate", "compare_versions"}
    assert users("tracks/vqa/report/versions.py") == {"compare_versions"} and users("tracks/vqa/icd/rl_rewards.py") == {"beam_rewards"}
    assert users("tracks/vqa/icd/samplers.py") == {"candidates"}
    assert "tracks/vqa/stages/beam.py" in reach["gather_beam"] and "tracks/vqa/icd/infoscore.py" not in reach["candidates"]


def test_every_rule_fingerprints_its_own_script():
    """No rules file keeps module lists: each rule with a script gets code("<that script>"), in every track's
    rules file, and every script in workflow/scripts is run by some rule (a script may serve several rules)."""
    used = set()
    for smk in sorted((ROOT / "rules").glob("*.smk")):
        for block in re.split(r"\n(?=rule |use rule )", smk.read_text()):
            script = re.search(r'script:\s*\n\s*"\.\./workflow/scripts/(\w+)\.py"', block)
            if not script:
                continue
            codes = re.findall(r"code=code\(([^)]*)\)", block)
            assert codes == [f'"{script.group(1)}"'], f"{smk.name}: {block.splitlines()[0]}"
            used.add(script.group(1))
    assert used == {p.stem for p in SCRIPTS.glob("*.py")}


@pytest.mark.slow  # > 30 s on 2 cores: the slow tier (.ci/run)
def test_editing_a_module_changes_only_the_fingerprints_that_reach_it(tmp_path):
    copy = tmp_path / "src"
    shutil.copytree(PKG, copy / "leverplus", ignore=shutil.ignore_patterns("assets", "__pycache__"))

    def digests():
        return {s.stem: files_digest(dependency_files(script_entries(s, copy), copy), copy) for s in SCRIPTS.glob("*.py")}

    before = digests()
    with open(copy / "leverplus/tracks/vqa/icd/selector_training.py", "a") as f:
        f.write("\n# a change to the selector training loop\n")
    after = digests()
    assert {s for s in before if before[s] != after[s]} == {"train_selector", "infer"}


def test_fingerprinting_imports_no_torch():
    code = (
        "import sys\nfrom pathlib import Path\nfrom leverplus.core.fingerprint import script_fingerprint\n"
        f"for s in Path({str(SCRIPTS)!r}).glob('*.py'): script_fingerprint(str(s))\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers', 'leverplus')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "torch" not in out and "transformers" not in out
    assert out.strip() == "['leverplus', 'leverplus.core', 'leverplus.core.fingerprint']"


def test_a_script_without_leverplus_imports_is_refused(tmp_path):
    script = tmp_path / "s.py"
    script.write_text("import os\n")
    with pytest.raises(ImportError, match="cannot be fingerprinted"):
        script_entries(script)
