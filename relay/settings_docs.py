"""`.env.example`, `app.json`'s variables and the README's configuration table, made from the
settings' declarations (relay.settings), so that none of them can say something else.

`./run python -m relay.settings_docs` rewrites the three; tests/test_config.py fails while any of
them differs from what this module makes.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from relay.settings import Setting, SettingsGroup

ROOT = Path(__file__).resolve().parent.parent
ENV_EXAMPLE_INTRO = """\
# Relay's environment, every variable with its meaning and default. Copy to .env and fill in
# what you need: every Relay process (the relay command, gunicorn's web app, the Celery worker
# and beat) reads .env from its working directory at start, and a variable set in the real
# environment wins over the file. An empty value, here or in the environment, means the default.
# .env is in .gitignore and .dockerignore: never commit real secrets.
# Made from the settings' declarations (relay.settings) by `python -m relay.settings_docs`.
"""
TABLE_HEADER = "| Variable | Default | Meaning |\n|---|---|---|\n"


def plain(markdown: str) -> str:
    """The documentation's Markdown as plain text: .env.example's comments, app.json's descriptions."""
    return markdown.replace("`", "")


def sentence(markdown: str) -> str:
    """Plain text ending in a full stop, capitalized unless it starts with a literal (`email` …)."""
    text = plain(markdown)
    if not markdown.startswith("`"):
        text = text[:1].upper() + text[1:]
    return text if text.endswith(".") else text + "."


def default_of(setting: Setting) -> str:
    """The README's "Default" cell."""
    if setting.shown_default is not None:
        return setting.shown_default
    return f"`{setting.default}`" if setting.default is not None else "–"


def described(setting: Setting) -> str:
    """The meaning and the default in plain sentences: .env.example's comment, app.json's description."""
    default = plain(default_of(setting)).replace("–", "none", 1)
    return f"{sentence(setting.doc)} Default: {default}{'' if default.endswith('.') else '.'}"


def env_example(groups: Sequence[SettingsGroup[Any]]) -> str:
    parts = [ENV_EXAMPLE_INTRO]
    for group in groups:
        parts.append(f"\n# ===== {group.title} =====\n")
        for setting in group.settings:
            parts.append(f"\n# {described(setting)}\n{setting.name}={setting.default or ''}\n")
    return "".join(parts)


def readme_table(groups: Sequence[SettingsGroup[Any]]) -> str:
    rows = (
        f"| `{setting.name}` | {default_of(setting)} | {setting.doc} |\n"
        for group in groups
        for setting in group.settings
    )
    return TABLE_HEADER + "".join(rows)


def app_json_env(groups: Sequence[SettingsGroup[Any]]) -> dict[str, dict[str, Any]]:
    """app.json's `env`: every setting but those an add-on or the platform sets."""
    env = {}
    for group in groups:
        for setting in group.settings:
            if setting.heroku is None:
                continue
            entry: dict[str, Any] = {"description": described(setting), "required": False}
            if setting.default is not None:
                entry["value"] = setting.default
            entry.update(setting.heroku)
            env[setting.name] = {key: value for key, value in entry.items() if value is not None}
    return env


def readme_with_table(readme: str, table: str) -> str:
    """README.md with its configuration table (the first table of "## Configuration") replaced."""
    head, section = readme.split("\n## Configuration\n", 1)
    before, rest = section.split(TABLE_HEADER[: TABLE_HEADER.index("\n") + 1], 1)
    lines = rest.splitlines(keepends=True)
    after = "".join(lines[next(i for i, line in enumerate(lines) if not line.startswith("|")) :])
    return f"{head}\n## Configuration\n{before}{table}{after}"


def app_json_with_env(text: str, env: dict[str, dict[str, Any]]) -> str:
    document = json.loads(text)
    document["env"] = env
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def write(groups: Sequence[SettingsGroup[Any]], root: Path = ROOT) -> list[str]:
    """Rewrite the three files from `groups`; the names of those that changed."""
    changed = []
    for name, make in (
        (".env.example", lambda text: env_example(groups)),
        ("app.json", lambda text: app_json_with_env(text, app_json_env(groups))),
        ("README.md", lambda text: readme_with_table(text, readme_table(groups))),
    ):
        path = root / name
        text = path.read_text(encoding="utf-8")
        made = make(text)
        if made != text:
            path.write_text(made, encoding="utf-8")
            changed.append(name)
    return changed


def main() -> None:
    from relay.config import DOCUMENTED_GROUPS

    changed = write(DOCUMENTED_GROUPS)
    print(f"rewrote {', '.join(changed)}" if changed else "all made from the declarations already", file=sys.stderr)


if __name__ == "__main__":
    main()
