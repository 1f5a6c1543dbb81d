"""Prompt templates are data: `assets/templates/*.toml`, validated when loaded, filled from named fields.

One TOML file per scenario, each holding an array `[[templates]]`. A template has an `id` (unique across
all files), a `title`, a `language` (zh or en), a `prompt` whose `{name}` placeholders are exactly its
`[[templates.fields]]`, and, for moderation, an `[templates.output]` table naming the checklist the
model must answer item by item (`checklist = { exposure = "暴露", ... }`). Literal braces in a prompt
(a JSON example) are written `{{` and `}}`, as in Python's str.format.

Decisions: anything malformed is a TemplateError naming the file and the template, raised when the
templates are loaded, never half-way through a page; a placeholder may not carry a format spec,
conversion or attribute access (`{a!r}`, `{a:>5}`, `{a.b}`), so a filled prompt is plain substitution;
every checklist id of a moderation template must appear in its prompt, so the model is asked for
exactly the items the verdict parser will look for.
"""
from __future__ import annotations

import hashlib
import re
import string
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from core.errors import TemplateError
from core.messages import MessageText
from core.settings import ASSETS_DIR

TEMPLATES_DIR = ASSETS_DIR / "templates"
SCENARIOS = ("general", "documents", "education", "moderation")
LANGUAGES = ("zh", "en")
_ID = re.compile(r"^[a-z0-9][a-z0-9-]{1,63}$")
_TEMPLATE_KEYS = {"id", "title", "language", "prompt", "fields", "output", "description"}
_FIELD_KEYS = {"name", "label", "default", "help", "choices"}
FIELD_BLANK = MessageText("template.field_blank", "Fill in “{field}” for the template “{template}”.")
FILLED_TOO_LONG = MessageText("template.filled_too_long", "With these fields the question is {length} characters "
                                                          "long; the limit is {limit}. Shorten the fields.")


@dataclass(frozen=True)
class TemplateField:
    """One blank the analyst fills in: placeholder name, label shown, default value, optional choices."""

    name: str
    label: str
    default: str = ""
    help: str = ""
    choices: tuple[str, ...] = ()


@dataclass(frozen=True)
class OutputShape:
    """The structured answer a template asks for: a verdict with one result per checklist item."""

    checklist: tuple[tuple[str, str], ...]  # (item id, label shown to the analyst), in prompt order

    @property
    def item_ids(self) -> tuple[str, ...]:
        return tuple(item for item, _label in self.checklist)


@dataclass(frozen=True)
class Template:
    """A named prompt with placeholders, for one scenario and one language."""

    id: str
    scenario: str
    title: str
    language: str
    prompt: str
    fields: tuple[TemplateField, ...] = ()
    output: OutputShape | None = None
    description: str = ""
    source: str = ""  # file it came from, for error messages

    @property
    def text_hash(self) -> str:
        """SHA-256 of the prompt text: history tells two versions of one template id apart by it."""
        return hashlib.sha256(self.prompt.encode("utf-8")).hexdigest()

    def defaults(self) -> dict[str, str]:
        return {f.name: f.default for f in self.fields}

    def fill(self, values: Mapping[str, str] | None = None, *, max_chars: int | None = None) -> str:
        """The prompt with every placeholder replaced; blank or missing fields, or a result over
        `max_chars` characters, are a TemplateError the analyst can act on."""
        given = {**self.defaults(), **(values or {})}
        filled: dict[str, str] = {}
        for field in self.fields:
            value = str(given.get(field.name) or "").strip()
            if not value:
                raise TemplateError(FIELD_BLANK(field=field.label, template=self.title))
            filled[field.name] = value
        text = self.prompt.format_map(filled)
        if max_chars is not None and len(text) > max_chars:
            raise TemplateError(FILLED_TOO_LONG(length=len(text), limit=max_chars))
        return text


def _placeholders(prompt: str, where: str) -> list[str]:
    names = []
    try:
        parsed = list(string.Formatter().parse(prompt))
    except ValueError as exc:
        raise TemplateError(f"{where}: the prompt has unbalanced braces ({exc}); write literal braces as {{{{ }}}}.") from None
    for _literal, name, spec, conversion in parsed:
        if name is None:
            continue
        if not name.isidentifier() or spec or conversion:
            raise TemplateError(f"{where}: placeholder {{{name}}} must be a plain name like {{object}}.")
        names.append(name)
    return names


def _field(raw: object, where: str) -> TemplateField:
    if not isinstance(raw, dict) or not isinstance(raw.get("name"), str) or not raw["name"].isidentifier():
        raise TemplateError(f"{where}: every field needs a `name` that is a plain identifier.")
    unknown = set(raw) - _FIELD_KEYS
    if unknown:
        raise TemplateError(f"{where}: field '{raw['name']}' has unknown key(s) {', '.join(sorted(unknown))}.")
    choices = raw.get("choices", [])
    if not isinstance(choices, list) or not all(isinstance(c, str) for c in choices):
        raise TemplateError(f"{where}: field '{raw['name']}': `choices` must be a list of strings.")
    default = str(raw.get("default", ""))
    if choices and default and default not in choices:
        raise TemplateError(f"{where}: field '{raw['name']}': default '{default}' is not one of its choices.")
    return TemplateField(
        name=raw["name"], label=str(raw.get("label", raw["name"])), default=default,
        help=str(raw.get("help", "")), choices=tuple(choices),
    )


def _output(raw: object, prompt: str, where: str) -> OutputShape:
    checklist = raw.get("checklist") if isinstance(raw, dict) else None
    if not isinstance(checklist, dict) or not checklist:
        raise TemplateError(f"{where}: `output.checklist` must be a table of item id = label.")
    missing = [item for item in checklist if item not in prompt]
    if missing:
        raise TemplateError(f"{where}: the prompt never names checklist item(s) {', '.join(missing)}.")
    return OutputShape(checklist=tuple((str(k), str(v)) for k, v in checklist.items()))


def _template(raw: object, scenario: str, source: str, index: int) -> Template:
    where = f"{source}, template {index + 1}"
    if not isinstance(raw, dict):
        raise TemplateError(f"{where}: each [[templates]] entry must be a table.")
    template_id = raw.get("id")
    if not isinstance(template_id, str) or not _ID.match(template_id):
        raise TemplateError(f"{where}: `id` must be lower-case letters, digits and dashes (got {template_id!r}).")
    where = f"{source}, template '{template_id}'"
    unknown = set(raw) - _TEMPLATE_KEYS
    if unknown:
        raise TemplateError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}.")
    for key in ("title", "prompt"):
        if not isinstance(raw.get(key), str) or not raw[key].strip():
            raise TemplateError(f"{where}: `{key}` is required and must be text.")
    if raw.get("language") not in LANGUAGES:
        raise TemplateError(f"{where}: `language` must be one of {', '.join(LANGUAGES)}.")
    prompt = raw["prompt"].strip()
    fields = tuple(_field(f, where) for f in raw.get("fields", []))
    names = [f.name for f in fields]
    if len(set(names)) != len(names):
        raise TemplateError(f"{where}: two fields share a name.")
    used = _placeholders(prompt, where)
    if set(used) != set(names):
        raise TemplateError(
            f"{where}: placeholders {sorted(set(used))} and fields {sorted(names)} must match one to one."
        )
    output = _output(raw["output"], prompt, where) if "output" in raw else None
    if scenario == "moderation" and output is None:
        raise TemplateError(f"{where}: a moderation template needs an [templates.output] checklist.")
    return Template(
        id=template_id, scenario=scenario, title=raw["title"].strip(), language=raw["language"], prompt=prompt,
        fields=fields, output=output, description=str(raw.get("description", "")), source=source,
    )


def load_file(path: Path) -> tuple[Template, ...]:
    """Every template in one TOML file, validated."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise TemplateError(f"{path.name} cannot be read as TOML: {exc}") from None
    scenario = data.get("scenario")
    if scenario not in SCENARIOS:
        raise TemplateError(f"{path.name}: `scenario` must be one of {', '.join(SCENARIOS)}.")
    entries = data.get("templates")
    if not isinstance(entries, list) or not entries:
        raise TemplateError(f"{path.name}: no [[templates]] entries.")
    return tuple(_template(raw, scenario, path.name, i) for i, raw in enumerate(entries))


def load_templates(folder: Path | None = None) -> tuple[Template, ...]:
    """All templates in the folder (default assets/templates), in file then entry order; ids unique across files."""
    templates = [t for path in sorted((folder or TEMPLATES_DIR).glob("*.toml")) for t in load_file(path)]
    seen: dict[str, str] = {}
    for template in templates:
        if template.id in seen:
            raise TemplateError(f"Template id '{template.id}' is used in both {seen[template.id]} and {template.source}.")
        seen[template.id] = template.source
    return tuple(templates)


def for_scenario(scenario: str, folder: Path | None = None) -> tuple[Template, ...]:
    return tuple(t for t in load_templates(folder) if t.scenario == scenario)


def by_id(template_id: str, folder: Path | None = None) -> Template | None:
    return next((t for t in load_templates(folder) if t.id == template_id), None)
