"""The template makes new projects with copier: renamed everywhere, installable, training, tested; and updatable.

`copier copy` runs from a throwaway git repo holding this working tree (committed or not), so what is tested is what
is on disk. Slow (a fresh virtualenv, a training run, the copy's own tests), and CI runs it.
"""

import importlib.util
import os
import re
import shlex
import shutil
import site
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, working_tree_files

pytest.importorskip("copier", reason='needs the template extra: pip install -e ".[template]"')
pytest.importorskip("copier_template_extensions", reason='needs the template extra: pip install -e ".[template]"')

OLD = "my_project"  # the template's own package, renamed in a copy; hydralight (the library) is not
OLD_DIST = "my-project"
PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"
ANSWERS = {
    "project_name": "Digit Net",
    "package_name": "digitnet",
    "author_name": "Ada Lovelace",
    "author_email": "ada@example.org",
    "description": "Handwritten digits, recognised by a small network.",
    # The running Python, so the copy installs here; not the default 3.10, so the version rules are exercised.
    "python_version": PYTHON if PYTHON in ("3.10", "3.11", "3.12", "3.13") else "3.10",
}
# Files copier edits beyond the renaming (FILE_EDITS in .copier/rename.py; README.md is rendered from its own template,
# COPY_TEMPLATES); every other file is the template's, with the name replaced and nothing else.
EDITED = {"pyproject.toml", "README.md", ".github/workflows/ci.yml", ".ci/install"}
# What stays in the template: the library (a copy installs it by version), the template's own tests, benchmarks and
# copier machinery.
NOT_COPIED = ("lib/", "benchmarks/", "tests/template/", ".copier/", ".git/")
NOT_COPIED_FILES = {"copier.yml", "{{_copier_conf.answers_file}}", "docs/copier.md"}
COPY_PYTHON_LINES = 3000  # what a user reads to own the copy (issue "A template you can own")
COPY_README_LINES = 120  # the copy's README (.copier/README.md.jinja): read in a few minutes
# The words of each example, which a copy's README must not say once the example is left out.
EXAMPLE_WORDS = {"digits_example": r"digits|classifier|mnist", "gpt_example": r"gpt|shakespeare"}
GIT_ENV = {
    "GIT_AUTHOR_NAME": "test",
    "GIT_AUTHOR_EMAIL": "test@example.org",
    "GIT_COMMITTER_NAME": "test",
    "GIT_COMMITTER_EMAIL": "test@example.org",
    "GIT_CONFIG_GLOBAL": os.devnull,  # no user hooks, signing or default-branch settings
}

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("git") is None, reason="copier needs git"),
]


def run(*args: str | Path, cwd: Path, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run a command; a failure shows the command and its output, not just an exit code."""
    result = subprocess.run(
        [str(arg) for arg in args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **GIT_ENV, **(env or {})},
    )
    assert result.returncode == 0, (
        f"{' '.join(map(str, args))} -> exit {result.returncode}\n--- stdout ---\n{result.stdout[-4000:]}\n"
        f"--- stderr ---\n{result.stderr[-6000:]}"
    )
    return result


def copier(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess:
    """`copier <args>` with the copier of this environment (the template extra)."""
    return run(sys.executable, "-m", "copier", *args, cwd=cwd)


def data_args(answers: dict[str, str]) -> list[str]:
    """The answers as copier's `--data key=value` options."""
    return [arg for key, value in answers.items() for arg in ("--data", f"{key}={value}")]


def files_of(root: Path) -> dict[str, Path]:
    """Every file under `root`, by its POSIX path relative to `root`."""
    return {path.relative_to(root).as_posix(): path for path in sorted(root.rglob("*")) if path.is_file()}


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    """A git repo of this working tree, tagged v0.1.0: what `copier copy <git url>` sees of a released template."""
    repo = tmp_path_factory.mktemp("tpl") / "template"
    for name in working_tree_files():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, repo / name)
    run("git", "init", "-q", "-b", "main", cwd=repo)
    run("git", "add", "-A", cwd=repo)
    run("git", "commit", "-q", "-m", "template A", cwd=repo)
    run("git", "tag", "v0.1.0", cwd=repo)
    return repo


@pytest.fixture(scope="module")
def project(template, tmp_path_factory) -> Path:
    """`copier copy` of the template into a new dir, with the answers given on the command line."""
    workdir = tmp_path_factory.mktemp("new")
    copier("copy", "--trust", "--defaults", "--quiet", *data_args(ANSWERS), template, "digit-net", cwd=workdir)
    return workdir / "digit-net"


@pytest.fixture(scope="module")
def project_without_gpt(template, tmp_path_factory) -> Path:
    """A copy that answered no to `gpt_example`."""
    workdir = tmp_path_factory.mktemp("nogpt")
    answers = data_args({**ANSWERS, "gpt_example": "false"})
    copier("copy", "--trust", "--defaults", "--quiet", *answers, template, "digit-net", cwd=workdir)
    return workdir / "digit-net"


@pytest.fixture(scope="module")
def project_without_examples(template, tmp_path_factory) -> Path:
    """A copy that answered no to every example question: a project with no task yet."""
    workdir = tmp_path_factory.mktemp("bare")
    answers = data_args({**ANSWERS, "digits_example": "false", "gpt_example": "false"})
    copier("copy", "--trust", "--defaults", "--quiet", *answers, template, "bare", cwd=workdir)
    return workdir / "bare"


def test_a_copy_without_the_gpt_task_has_no_trace_of_it_and_its_configs_build(project_without_gpt, project):
    """gpt_example=false: the GPT's files are gone, nothing mentions it, and every remaining config option still
    composes and builds (the copy's own test, run on its source tree)."""
    copy = project_without_gpt
    dropped = set(files_of(project)) - set(files_of(copy))
    assert {"src/digitnet/models/gpt.py", "conf/data/shakespeare.yaml", "tests/test_gpt.py"} <= dropped
    mentions = [
        f"{relpath}:{number}"
        for relpath, path in files_of(copy).items()
        for number, line in enumerate(path.read_bytes().splitlines(), 1)
        if re.search(rb"gpt|shakespeare|copier:(if|endif)", line, re.IGNORECASE) and relpath != ".copier-answers.yml"
    ]
    assert not mentions, mentions
    env = {**os.environ, "PYTHONPATH": str(copy / "src")}  # the copy's package, not installed here
    # The logger options, slow to build, share nothing with the GPT task.
    tests = ["tests/test_configs.py", "-q", "-m", "not slow", "-p", "no:cacheprovider", "-n", "0", "-k",
             "composes and not logger"]  # fmt: skip
    result = subprocess.run([sys.executable, "-m", "pytest", *tests], cwd=copy, capture_output=True, text=True,
                            env=env, timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]


def test_the_copy_never_mentions_the_template_name(project):
    """No path and no file of the copy mentions the template's name, in any case (the answers file's _src_path may)."""
    mentions = []
    for relpath, path in files_of(project).items():
        if re.search(f"{OLD}|{OLD_DIST}", relpath, re.IGNORECASE):
            mentions.append(relpath)
        for number, line in enumerate(path.read_bytes().splitlines(), 1):
            if re.search(f"{OLD}|{OLD_DIST}".encode(), line, re.IGNORECASE):
                if relpath == ".copier-answers.yml" and line.startswith(b"_src_path:"):
                    continue  # where the template came from: a URL or path that may hold the name
                mentions.append(f"{relpath}:{number}: {line.decode(errors='replace')[:160]}")
    assert not mentions, "\n".join(mentions)
    assert (project / "src" / "digitnet" / "__init__.py").is_file()
    assert not (project / "src" / OLD).exists()


def test_the_copy_is_the_template_renamed(template, project):
    """Each copied file is the template's with only the name replaced (bar the answers' lines); machinery stays out."""
    # Byte for byte: the binary digits data, `${{ }}` in the workflow, notebooks' JSON, executable bits.
    sources = {
        relpath.replace(f"src/{OLD}/", "src/digitnet/"): path
        for relpath, path in files_of(template).items()
        if not relpath.startswith(NOT_COPIED) and relpath not in NOT_COPIED_FILES
    }
    copied = files_of(project)
    assert set(copied) == {*sources, ".copier-answers.yml"}
    different = []
    for relpath, source in sources.items():
        renamed = source.read_bytes().replace(OLD.encode(), b"digitnet").replace(OLD_DIST.encode(), b"digitnet")
        renamed = renamed.replace(OLD.upper().encode(), b"DIGITNET")
        if copied[relpath].read_bytes() != renamed:
            different.append(relpath)
        assert os.access(copied[relpath], os.X_OK) == os.access(source, os.X_OK), relpath
    # Files with optional parts lose their `copier:if` markers (kept parts stay: the default answers keep them all).
    marked = {
        relpath for relpath, source in sources.items() if re.search(rb"copier:(if|template-only)", source.read_bytes())
    }
    assert sorted(different) == sorted((EDITED | marked) & set(sources))
    assert not [relpath for relpath, path in copied.items() if re.search(rb"copier:(if|endif)\b", path.read_bytes())]


def test_the_answers_land_in_pyproject_readme_and_the_answers_file(project):
    """Project name, description, author and Python version reach pyproject.toml, the README and .copier-answers.yml."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        tomllib = pytest.importorskip("tomli")
    pyproject = tomllib.loads((project / "pyproject.toml").read_text())
    meta = pyproject["project"]
    assert meta["name"] == "digitnet"
    assert meta["description"] == ANSWERS["description"]
    assert meta["authors"] == [{"name": "Ada Lovelace", "email": "ada@example.org"}]
    assert meta["requires-python"] == f">={ANSWERS['python_version']}"
    assert meta["dependencies"] == ["hydralight>=0.2,<0.3"]  # the library, by version
    assert pyproject["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"] == ["src/digitnet"]
    assert pyproject["tool"]["ruff"]["target-version"] == "py" + ANSWERS["python_version"].replace(".", "")
    assert (project / "README.md").read_text().startswith(f"# Digit Net\n\n{ANSWERS['description']}\n\n")
    answers = (project / ".copier-answers.yml").read_text()
    assert "_commit: v0.1.0" in answers
    assert "package_name: digitnet" in answers


@pytest.mark.parametrize(
    ("package_name", "says"),
    [("2digits", "Not a valid package name"), ("Digit-Net", "Not a valid package name"), ("class", "keyword")],
)
def test_an_invalid_package_name_is_refused(template, tmp_path, package_name, says):
    """A package name that is no importable lowercase identifier stops the copy with a message, and writes nothing."""
    command = ["copier", "copy", "--trust", "--defaults", "--data", f"package_name={package_name}"]
    result = subprocess.run(
        [sys.executable, "-m", *command, str(template), str(tmp_path / "bad")],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **GIT_ENV},
    )
    assert result.returncode != 0
    assert says in result.stderr + result.stdout
    assert not (tmp_path / "bad").exists()


def library_source(project: Path) -> str:
    """The pip requirement the copy's .ci/install installs the library from when HYDRALIGHT is not set."""
    found = re.search(r'else library=\("([^"]+)"\)', (project / ".ci" / "install").read_text())
    assert found, "no default library source in the copy's .ci/install"
    return found.group(1)


def python_lines(root: Path) -> int:
    return sum(len(path.read_bytes().splitlines()) for path in root.rglob("*.py") if ".git" not in path.parts)


def test_the_copy_installs_the_library_by_version_trains_and_passes_its_tests(template, project, tmp_path):
    """In a fresh virtualenv the copy installs hydralight from the template's lib/ at the commit it was copied from
    (its .ci/install's default) and itself; its quickstart trains (fast mode), and its whole quick suite passes. It
    holds none of the machinery: under COPY_PYTHON_LINES lines of Python in all."""
    commit = run("git", "rev-parse", "HEAD", cwd=template).stdout.strip()
    assert library_source(project) == f"hydralight @ git+file://{template}@{commit}#subdirectory=lib"
    assert not (project / "lib").exists()
    assert python_lines(project) <= COPY_PYTHON_LINES, python_lines(project)
    # The venv reuses this environment's packages (torch, lightning, ...) through a .pth file of plain path lines:
    # pip resolves the copy's real dependencies against them and installs only hydralight and the copy.
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=tmp_path)
    python = venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    purelib = run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=tmp_path).stdout
    # Path lines only: this environment's .pth files (hence this checkout's editable installs) are not processed.
    Path(purelib.strip(), "_reuse_outer_env.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    env = {"VIRTUAL_ENV": str(venv), "PATH": f"{python.parent}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": ""}

    run(python, "-m", "pip", "install", "-q", library_source(project), "-e", f"{project}[dev]", cwd=tmp_path, env=env)
    where = run(python, "-c", "import digitnet, hydralight; print(digitnet.__file__, hydralight.__file__)",
                cwd=tmp_path, env=env).stdout.split()  # fmt: skip
    assert Path(where[0]) == project / "src" / "digitnet" / "__init__.py"
    assert Path(where[1]).is_relative_to(purelib.strip())  # the library from its version, not this checkout
    assert importlib.util.find_spec("digitnet") is None  # nothing leaked into this environment

    run_dir = tmp_path / "run"
    run(python, "train.py", "debug=fdr", f"hydra.run.dir={run_dir}", cwd=project, env=env)
    assert "test/acc" in (run_dir / "metrics.json").read_text()

    tests = run(python, "-m", "pytest", "-m", "not slow", "-q", "-p", "no:cacheprovider", cwd=project, env=env,
                timeout=600)  # fmt: skip
    summary = tests.stdout.strip().splitlines()[-1]
    assert re.search(r"\d+ passed", summary) and "failed" not in summary, tests.stdout[-3000:]
    print(f"copy's tests: {summary}")


# A task a user adds to a copy without examples: a module, a data module and their two configs (README "Add a task").
USER_TASK = {
    "src/digitnet/models/linear.py": """
import torch
from lightning.pytorch import LightningModule


class Linear(LightningModule):
    def __init__(self, in_features: int = 3, lr: float = 0.1) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.layer = torch.nn.Linear(in_features, 1)

    def step(self, batch, stage):
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.layer(x).squeeze(-1), y)
        self.log(f"{stage}/loss", loss)
        return loss

    def training_step(self, batch, batch_idx):
        return self.step(batch, "train")

    def validation_step(self, batch, batch_idx):
        self.step(batch, "val")

    def test_step(self, batch, batch_idx):
        self.step(batch, "test")

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)
""",
    "src/digitnet/data/noise.py": """
import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, TensorDataset


class Noise(LightningDataModule):
    def __init__(self, n: int = 96, batch_size: int = 16) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        x = torch.randn(n, 3, generator=generator)
        y = x @ torch.tensor([1.0, -2.0, 0.5]) + 0.1 * torch.randn(n, generator=generator)
        self.splits = [TensorDataset(x[i::3], y[i::3]) for i in range(3)]
        self.batch_size = batch_size

    def train_dataloader(self):
        return DataLoader(self.splits[0], batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self):
        return DataLoader(self.splits[1], batch_size=self.batch_size)

    def test_dataloader(self):
        return DataLoader(self.splits[2], batch_size=self.batch_size)
""",
    "conf/model/linear.yaml": "_target_: digitnet.models.linear.Linear\nlr: 0.1\n",
    "conf/data/noise.yaml": "_target_: digitnet.data.noise.Noise\nbatch_size: 16\n",
}


def test_a_copy_without_examples_says_what_to_add_then_trains_the_task_added(project_without_examples, tmp_path):
    """Every example question answered no: no example file is copied; `python train.py` says in one line what to add
    and writes nothing; with a module, a data module and their two configs added, `python train.py model=<m>
    data=<d> monitor=... mode=...` trains and tests, and the copy's own suite passes."""
    copy = tmp_path / "bare"
    shutil.copytree(project_without_examples, copy)  # the fixture's copy stays as copier made it
    assert sorted(path.name for path in (copy / "src" / "digitnet").rglob("*.py")) == ["__init__.py"] * 3
    example_dirs = [copy / "conf" / group for group in ("data", "experiment", "hparams_search")] + [copy / "notebooks"]
    assert not [path for directory in example_dirs for path in directory.rglob("*") if path.is_file()]
    env = {**os.environ, "PYTHONPATH": str(copy / "src"), "HYDRA_FULL_ERROR": "0"}  # the copy, not installed here
    refused = subprocess.run([sys.executable, "train.py"], cwd=copy, capture_output=True, text=True, env=env,
                             timeout=120)  # fmt: skip
    assert refused.returncode == 2, refused.stderr
    assert refused.stderr.count("\n") == 1 and "this project has no task yet" in refused.stderr, refused.stderr
    assert not (copy / "outputs" / "train").exists()

    for relpath, text in USER_TASK.items():
        (copy / relpath).parent.mkdir(parents=True, exist_ok=True)
        (copy / relpath).write_text(text.lstrip())
    overrides = ["model=linear", "data=noise", "monitor=val/loss", "mode=min", "trainer.max_epochs=2"]
    run(sys.executable, "train.py", *overrides, f"hydra.run.dir={tmp_path / 'run'}", cwd=copy, env=env)
    assert "test/loss" in (tmp_path / "run" / "metrics.json").read_text()
    tests = run(sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "0", cwd=copy, env=env)
    assert "failed" not in tests.stdout.strip().splitlines()[-1], tests.stdout[-3000:]


def readme_drop_commands(readme: str) -> dict[str, str]:
    """The README's "Drop an example" commands (the template's, or a copy's), by the example each one drops (its
    trailing comment)."""
    section = re.split(r"^#+ Drop an example$", readme, maxsplit=1, flags=re.M)[1].split("```bash\n", 1)[1]
    section = section.split("```", 1)[0]
    lines = [re.sub(r"\s+# copier:if \w+$", "", line) for line in section.splitlines() if line]  # the template's
    return {line.rsplit("# ", 1)[-1].strip(): line for line in lines}


def test_the_readme_drops_each_example_by_the_files_copier_leaves_out(project):
    """The files README "Drop an example" deletes for an example are exactly those copier.yml leaves out of a copy
    without it; a copy's README (.copier/README.md.jinja) types the same commands, renamed."""
    yaml = pytest.importorskip("yaml")
    excluded = [entry for entry in yaml.safe_load((ROOT / "copier.yml").read_text())["_exclude"] if "{%" in entry]
    by_question = {
        re.search(r"if not (\w+) %", entry).group(1): entry.split("%}")[1].split("{%")[0].split()
        for entry in excluded
        if " and " not in entry
    }
    commands = readme_drop_commands((ROOT / "README.md").read_text())
    examples = {"digits_example": "the digits classifier", "gpt_example": "the GPT"}
    assert set(by_question) == set(examples)
    for question, files in by_question.items():
        command = commands[examples[question]].split("#")[0].split()
        assert command[:2] == ["rm", "-r"] and sorted(command[2:]) == sorted(files), question
    renamed = {example: command.replace(f"src/{OLD}/", "src/digitnet/") for example, command in commands.items()}
    assert readme_drop_commands((project / "README.md").read_text()) == renamed


def test_a_copy_whose_examples_are_deleted_as_the_readme_says_passes_its_suite(project, tmp_path):
    """A copy made with the examples, then each dropped by README "Drop an example" as typed: nothing else to edit,
    its suite passes, and `python train.py` says in one line what to add."""
    copy = tmp_path / "copy"
    shutil.copytree(project, copy)
    for command in readme_drop_commands((copy / "README.md").read_text()).values():
        run("bash", "-c", command, cwd=copy)
    env = {**os.environ, "PYTHONPATH": str(copy / "src"), "HYDRA_FULL_ERROR": "0"}  # the copy, not installed here
    tests = run(sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "0", cwd=copy, env=env)
    assert "failed" not in tests.stdout.strip().splitlines()[-1], tests.stdout[-3000:]
    refused = subprocess.run([sys.executable, "train.py"], cwd=copy, capture_output=True, text=True, env=env,
                             timeout=120)  # fmt: skip
    assert refused.returncode == 2 and "no data and no model chosen" in refused.stderr, refused.stderr
    run(sys.executable, "train.py", "--help", cwd=copy, env=env)


def readme_shell_lines(readme: str) -> list[str]:
    """The command lines of the README's ```bash blocks, without their trailing comments."""
    blocks = re.findall(r"^```bash\n(.*?)^```$", readme, re.DOTALL | re.MULTILINE)
    lines = (re.sub(r"\s+#\s.*$", "", line).strip() for block in blocks for line in block.splitlines())
    return [line for line in lines if line and not line.startswith("#")]


@pytest.mark.parametrize("fixture", ["project", "project_without_gpt", "project_without_examples"])
def test_the_copy_readme_is_about_the_project_and_its_commands_run(fixture, request, tmp_path):
    """A copy's README is its own: the project's title and description, short, no word of an example the copy left
    out, no template syntax; its commands run as typed in the copy (`make` ones as a dry run, `python` ones composing
    their config with `--cfg job`, those with a `<placeholder>` not at all), and its "Drop an example" commands leave
    a project whose `python train.py --help` works."""
    yaml = pytest.importorskip("yaml")
    copy = request.getfixturevalue(fixture)
    readme = (copy / "README.md").read_text()
    title = f"# {ANSWERS['project_name']}\n\n{ANSWERS['description']}\n\n"
    assert readme.startswith(title)
    assert len(readme.splitlines()) <= COPY_README_LINES, len(readme.splitlines())
    assert not re.search(r"\{\{|\{%|\{#|copier:|my_project|my-project", readme), readme
    assert "hydralight" in readme and f"src/{ANSWERS['package_name']}/" in readme
    answers = yaml.safe_load((copy / ".copier-answers.yml").read_text())
    body = readme[len(title) :]  # the description (ours) may say "digits"
    for question, words in EXAMPLE_WORDS.items():
        said = re.findall(words, body, re.IGNORECASE)
        assert bool(said) == answers[question], (question, answers[question], said)

    env = {**os.environ, "PYTHONPATH": str(copy / "src"), "HYDRA_FULL_ERROR": "0"}  # the copy, not installed here
    drops = []
    for line in readme_shell_lines(readme):
        words = shlex.split(line)
        if "<" in line:  # a placeholder for the user's own value
            continue
        if words[:2] == ["rm", "-r"]:
            drops.append(line)
        elif words[0] == "make":
            run("make", "-n", *words[1:], cwd=copy, env=env)
        elif words[0] == "python":
            cfg = [] if {"--help", "--cfg"} & set(words) else ["--cfg", "job"]
            run(sys.executable, *words[1:], *cfg, cwd=copy, env=env)
        else:
            raise AssertionError(f"a README command this test does not know how to run: {line}")
    assert len(drops) == sum(answers[question] for question in EXAMPLE_WORDS)
    if drops:
        dropped = tmp_path / "dropped"
        shutil.copytree(copy, dropped)
        for command in drops:
            run("bash", "-c", command, cwd=dropped)
        run(sys.executable, "train.py", "--help", cwd=dropped, env={**env, "PYTHONPATH": str(dropped / "src")})


def test_copier_update_brings_a_later_template_change(template, tmp_path):
    """`copier update` brings a later template release into the copy, renamed, and keeps the copy's own edits."""
    # A clone of the template (tags included) and a copy of it at v0.1.0, so the other tests' fixtures stay as they are.
    run("git", "clone", "-q", template, tmp_path / "template", cwd=tmp_path)
    template = tmp_path / "template"
    copier("copy", "--trust", "--defaults", "--quiet", *data_args(ANSWERS), template, "digit-net", cwd=tmp_path)
    copy = tmp_path / "digit-net"
    run("git", "init", "-q", "-b", "main", cwd=copy)
    run("git", "add", "-A", cwd=copy)
    run("git", "commit", "-q", "-m", "new project", cwd=copy)
    readme = copy / "README.md"
    readme.write_text(readme.read_text() + "\nOur own notes.\n")  # the copy's own edit
    run("git", "commit", "-q", "-am", "our notes", cwd=copy)

    # The template, later: a new module, a config that points at it, and a changed line in an existing config.
    (template / "src" / OLD / "greeting.py").write_text(f'"""Says hello from {OLD}."""\n\nNAME = "{OLD}"\n')
    (template / "conf" / "greeting.yaml").write_text(f"_target_: {OLD}.greeting.NAME\n")
    digits = template / "conf" / "data" / "digits.yaml"
    digits.write_text(digits.read_text() + f"# {OLD}: template B\n")
    run("git", "add", "-A", cwd=template)
    run("git", "commit", "-q", "-m", "template B", cwd=template)
    run("git", "tag", "v0.2.0", cwd=template)

    copier("update", "--trust", "--defaults", "--quiet", cwd=copy)

    greeting = (copy / "src" / "digitnet" / "greeting.py").read_text()
    assert greeting == '"""Says hello from digitnet."""\n\nNAME = "digitnet"\n'
    assert (copy / "conf" / "greeting.yaml").read_text() == "_target_: digitnet.greeting.NAME\n"
    assert (copy / "conf" / "data" / "digits.yaml").read_text().endswith("# digitnet: template B\n")
    assert not (copy / "src" / OLD).exists()
    assert readme.read_text().endswith("\nOur own notes.\n")
    assert "_commit: v0.2.0" in (copy / ".copier-answers.yml").read_text()


def test_rename_keeps_other_jinja_syntax_literal(monkeypatch):
    """Only the name becomes Jinja: `${{ }}`, `{% %}`, `{# #}` in a file stay literal; template-only blocks go."""
    jinja2 = pytest.importorskip("jinja2")
    spec = importlib.util.spec_from_file_location("rename", ROOT / ".copier" / "rename.py")
    rename = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "rename", rename)  # as copier's extension loader does
    spec.loader.exec_module(rename)
    source = (
        f"from {OLD}.cli import main  # {{{{ not jinja }}}} {{% raw %}} {{# kept #}}\n"
        f"pip install {OLD_DIST}[plots]; {OLD_DIST}-x; ${{{{ github.ref }}}}; {OLD.upper()}_RUN_DIR; hydralight\n"
        "# copier:template-only-start\nonly in the template\n# copier:template-only-end\nend\n"
    )
    env = jinja2.Environment(
        loader=jinja2.DictLoader({"example.py": source}), extensions=[rename.RenameProject], keep_trailing_newline=True
    )
    rendered = env.get_template("example.py").render(package_name="my_pkg", dist_name="my-pkg", project_name="My Pkg")
    assert rendered == (
        "from my_pkg.cli import main  # {{ not jinja }} {% raw %} {# kept #}\n"
        "pip install my-pkg[plots]; my-pkg-x; ${{ github.ref }}; MY_PKG_RUN_DIR; hydralight\n"
        "end\n"
    )


@pytest.mark.parametrize("keep", [True, False])
def test_optional_parts_stay_or_go_with_their_answer(monkeypatch, keep):
    """A line marked `copier:if <question>`, or a block between `copier:if` and `copier:endif` lines, reaches the copy
    only when the answer is yes; the markers never do, and a marker naming an unknown question stops the copy."""
    jinja2 = pytest.importorskip("jinja2")
    spec = importlib.util.spec_from_file_location("rename", ROOT / ".copier" / "rename.py")
    rename = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "rename", rename)
    spec.loader.exec_module(rename)
    source = (
        "first\n"
        f"from {OLD}.models.gpt import GPT  # copier:if gpt_example\n"
        "| `data` | `shakespeare` | <!-- copier:if gpt_example -->\n"
        "    # copier:if gpt_example\n    only with the GPT\n\n    # copier:endif\n\n"
        "last\n"
    )
    env = jinja2.Environment(
        loader=jinja2.DictLoader({"a.md": source, "bad.md": "x  # copier:if typo\n"}),
        extensions=[rename.RenameProject],
        keep_trailing_newline=True,
    )
    rendered = env.get_template("a.md").render(package_name="my_pkg", project_name="My Pkg", gpt_example=keep)
    kept = "from my_pkg.models.gpt import GPT\n| `data` | `shakespeare` |\n    only with the GPT\n\n"
    assert rendered == "first\n" + (kept if keep else "") + "last\n"
    with pytest.raises(jinja2.TemplateSyntaxError, match="copier:if typo"):
        env.get_template("bad.md")
