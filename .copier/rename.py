"""Renames the template for a new project inside copier's own rendering: a Jinja extension that copier.yml loads.

The template is a plain project that runs and passes its tests as it is: no `{{ }}` in its paths, no `.jinja` files.
copier.yml sets `_templates_suffix: ""`, so copier renders every text file (and every path) through its Jinja
environment; this extension's `preprocess` hook first turns each one into a Jinja template:

- every mention of the template's own package (`my_project`: its tasks) becomes the matching answer (`package_name`
  in imports, paths and `_target_`s, `dist_name` where pip reads it); the library, `hydralight`, keeps its name;
- the few lines that carry other answers (pyproject's description, authors and Python version, the CI's matrix) are
  edited by the rules in FILE_EDITS (a required rule that no longer matches stops the copy);
- a file in COPY_TEMPLATES is not the template's file at all in a copy: it renders a real Jinja template kept in
  .copier/ (never copied), e.g. README.md, which in the template is the template's README and in a copy a short one
  about the project (.copier/README.md.jinja);
- blocks from a `copier:template-only-start` line to a `copier:template-only-end` line (and one blank line after)
  are dropped;
- what belongs to an optional part (a yes/no question in CONDITIONS) is kept only where the answer is yes: a line
  ending in a `copier:if <question>` comment (`# ...` or `<!-- ... -->`), or the lines between a comment line
  `copier:if <question>` and a comment line `copier:endif`; the markers themselves never reach a copy;
- everything else is wrapped in `{% raw %}`, so `${{ github.ref }}` in a workflow or `{{` in a notebook stays as is.

Copier then renders the result with the answers. Since the renaming is part of rendering, `copier update` renders the
old and the new template version the same way and merges the difference like any other template change.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from jinja2 import Environment, TemplateSyntaxError
from jinja2.ext import Extension

OLD_NAME = "my_project"  # the template's own package: its tasks; `hydralight` (the library) keeps its name
OLD_DIST = "my-project"  # what pip knows it by

# One mention of the old name, and the answer it becomes (EXPRESSION_OF), by context:
MENTION = re.compile(
    rf"(?P<dist>{OLD_DIST})"  # pip's names: `my-project[plots]`, pyproject's `name`
    rf"|(?P<package>{OLD_NAME})"  # the import name: imports, paths, `_target_`s
    rf"|(?P<upper>{OLD_NAME.upper()})"  # environment variables
)
EXPRESSION_OF = {
    "dist": "dist_name",
    "package": "package_name",
    "upper": "package_name | upper",
}

TEMPLATE_ONLY = re.compile(
    r"^[^\n]*\bcopier:template-only-start\b[^\n]*\n.*?^[^\n]*\bcopier:template-only-end\b[^\n]*(?:\n\n?|\Z)",
    re.DOTALL | re.MULTILINE,
)
# The yes/no questions of copier.yml that parts of files depend on; a marker naming another stops the copy.
CONDITIONS = ("digits_example", "gpt_example")
_COMMENT = r"(?:#|<!--)[ \t]*copier:"
CONDITIONAL_BLOCK = re.compile(
    rf"^[ \t]*{_COMMENT}if (?P<question>\w+)[^\n]*\n(?P<body>.*?)^[ \t]*{_COMMENT}endif\b[^\n]*(?:\n|\Z)"
    r"(?P<after>(?:[ \t]*\n)*)",  # the blank lines after a block go with it, so that a dropped one leaves no gap
    re.DOTALL | re.MULTILINE,
)
TRAILING_BLANK_LINES = re.compile(r"^(?:[ \t]*\n)+\Z", re.MULTILINE)
CONDITIONAL_LINE = re.compile(
    rf"^(?P<body>[^\n]*?\S)[ \t]*{_COMMENT}if (?P<question>\w+)[ \t]*(?:-->)?[ \t]*(?P<end>\n|\Z)", re.MULTILINE
)
JINJA_EXPRESSION = re.compile(r"\{\{(.*?)\}\}")
HELD = re.compile(r"\x00(\d+)\x00")
ENDRAW = re.compile(r"\{%[-+]?\s*endraw")


@dataclass(frozen=True)
class Edit:
    """Replace `pattern` with `replacement`, whose `{{ ... }}` parts are Jinja expressions and the rest literal text."""

    pattern: re.Pattern[str]
    replacement: str
    required: bool = True  # a required edit that no longer matches stops the copy: the rule needs updating


def digits_default(group: str, option: str, otherwise: str) -> Edit:
    """The defaults-list entry `- <group>: <option>` of the digits example, `otherwise` in a copy without it."""
    return Edit(
        re.compile(rf"^  - optional {group}: {option}\b", re.M),
        f"  - {{{{ {f'optional {group}: {option}'!r} if digits_example else {f'{group}: {otherwise}'!r} }}}}",
    )


TASK = (("data", "digits"), ("model", "classifier"))
DIGITS_BEST = (
    Edit(re.compile(r"^monitor: val/acc\b", re.M), "monitor: {{ 'val/acc' if digits_example else 'val/loss' }}"),
    Edit(re.compile(r"^mode: max\b", re.M), "mode: {{ 'max' if digits_example else 'min' }}"),
)

FILE_EDITS: dict[str, tuple[Edit, ...]] = {
    "pyproject.toml": (
        Edit(re.compile(rf'^name = "{OLD_DIST}"$', re.M), 'name = "{{ dist_name }}"'),
        Edit(
            re.compile(r"^description = .*$", re.M),
            "description = {{ description | toml_str }}\n"
            "authors = [{ name = {{ author_name | toml_str }}"
            "{{ (', email = ' ~ (author_email | toml_str)) if author_email else '' }} }]",
        ),
        Edit(re.compile(r'^requires-python = ">=3\.\d+"$', re.M), 'requires-python = ">={{ python_version }}"'),
        Edit(
            re.compile(r'^target-version = "py3\d+"$', re.M),
            "target-version = \"py{{ python_version | replace('.', '') }}\"",
        ),
    ),
    # Where the copy installs the library from: it has no lib/ (copier.yml's computed `hydralight_source`).
    ".ci/install": (Edit(re.compile(r"library=\(-e \./lib\)"), "library=({{ hydralight_source | tojson }})"),),
    # Without the digits example the project has no default task: `model: ???` makes `python train.py` say what to
    # add (hydralight.core.cli.check_task_chosen); "best" is then the library's default, the lowest val/loss.
    "conf/train.yaml": (*(digits_default(group, option, "???") for group, option in TASK), *DIGITS_BEST),
    "conf/eval.yaml": (*(digits_default(group, option, "null") for group, option in TASK), *DIGITS_BEST),
    "conf/predict.yaml": (digits_default("data", "digits", "null"),),
    "conf/prepare.yaml": (digits_default("source", "digits", "???"),),
    ".github/workflows/ci.yml": (
        # The test matrix: the project's oldest Python and a recent one.
        Edit(
            re.compile(r'python-version: \["3\.\d+", "3\.\d+"\]'),
            "python-version: {{ [python_version, '3.12'] | unique | list | tojson }}",
            required=False,
        ),
    ),
}


# Files a copy gets from a template of their own (a real Jinja template of the answers, in .copier/, which copier.yml
# keeps out of copies) instead of from the template's file of the same name: the template's README is about the
# template, the copy's about the project. An `{% include %}`, as copier's docs show ("Importing Jinja templates and
# macros"): copier renders README.md as usual, so `copier update` merges it like any other file.
COPY_TEMPLATES = {"README.md": ".copier/README.md.jinja"}


def to_jinja(source: str, name: str) -> str:
    """The Jinja template that renders file `name` of the template into the new project."""
    if "\x00" in source:
        raise TemplateSyntaxError("a NUL character in a text file: cannot render it", 1, name)
    if ENDRAW.search(source):
        raise TemplateSyntaxError("'endraw' in the file: it cannot be wrapped in {% raw %}", 1, name)
    held: list[str] = []  # Jinja, kept out of the {% raw %} parts

    def hold(jinja: str) -> str:
        held.append(jinja)
        return f"\x00{len(held) - 1}\x00"

    def only_if(match: re.Match[str]) -> str:
        question = match["question"]
        if question not in CONDITIONS:
            raise TemplateSyntaxError(f"copier:if {question}: not one of {CONDITIONS} (.copier/rename.py)", 1, name)
        if "after" in match.groupdict():  # a block: its own trailing blank lines give way to those after it
            body = TRAILING_BLANK_LINES.sub("", match["body"]) + match["after"]
        else:
            body = match["body"] + match["end"]
        return hold(f"{{% if {question} %}}") + body + hold("{% endif %}")

    text = TEMPLATE_ONLY.sub("", source)
    text = CONDITIONAL_BLOCK.sub(only_if, text)
    text = CONDITIONAL_LINE.sub(only_if, text)
    for edit in FILE_EDITS.get(name, ()):
        replacement = JINJA_EXPRESSION.sub(lambda m: hold("{{ " + m.group(1).strip() + " }}"), edit.replacement)
        text, count = edit.pattern.subn(lambda _, held_text=replacement: held_text, text)
        if edit.required and count == 0:
            raise TemplateSyntaxError(
                f"copier rename rule {edit.pattern.pattern!r} no longer matches: update FILE_EDITS in "
                ".copier/rename.py",
                1,
                name,
            )
    text = MENTION.sub(lambda m: hold("{{ " + EXPRESSION_OF[m.lastgroup] + " }}"), text)
    parts = HELD.split(text)  # literal, held index, literal, held index, ..., literal
    out = []
    for i, part in enumerate(parts):
        if i % 2:
            out.append(held[int(part)])
        elif part:
            out.append("{% raw %}" + part + "{% endraw %}")
    return "".join(out)


def rename_string(source: str) -> str:
    """Copier's own strings (a path part, a value in copier.yml): only the mentions of the old name change."""
    return MENTION.sub(lambda m: "{{ " + EXPRESSION_OF[m.lastgroup] + " }}", source)


class RenameProject(Extension):
    """Jinja extension: the template's files, as they are, become templates of the renamed project."""

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        if environment.trim_blocks or environment.lstrip_blocks:
            raise ValueError("RenameProject needs trim_blocks and lstrip_blocks off (copier.yml `_envops`)")
        environment.filters["toml_str"] = lambda value: json.dumps(str(value), ensure_ascii=False)

    def preprocess(self, source: str, name: str | None, filename: str | None = None) -> str:
        if name is None:  # copier's `from_string`: path parts and copier.yml values
            return rename_string(source)
        if name in COPY_TEMPLATES:
            return f"{{% include {json.dumps(COPY_TEMPLATES[name])} %}}"
        if "{{" in name or name in COPY_TEMPLATES.values():  # real Jinja templates: the answers file, COPY_TEMPLATES'
            return source
        return to_jinja(source, name)
