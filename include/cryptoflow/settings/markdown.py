"""docs/configuration.md, generated from the table of settings (`cryptoflow config --markdown`)."""

from __future__ import annotations

from cryptoflow.settings.table import _BY_FIELD, SECTION_DOCS, SECTIONS, SETTINGS


def markdown_table() -> str:
    """docs/configuration.md: every setting with its documented default and meaning, by section."""
    shown = {
        "{home}": "<checkout>",
        "{state}": "<state>",
        "{pg_port}": _BY_FIELD["pg_port"].default,
    }
    rows = [
        "# Configuration",
        "",
        "Generated from `include/cryptoflow/settings/` by `cryptoflow config --markdown`: edit the settings, not",
        "this file. Every variable is optional; `cryptoflow config` prints the values in force.",
    ]
    for section in SECTIONS:
        rows += [
            "",
            f"## {section}",
            "",
            SECTION_DOCS[section],
            "",
            "| variable | default | meaning |",
            "|---|---|---|",
        ]
        for s in (s for s in SETTINGS if s.section == section):
            default = s.default
            for mark, text in shown.items():
                default = default.replace(mark, text)
            default = default.replace("|", "\\|")
            rows.append(
                f"| `{s.env}` | `{default}` | {s.doc} |"
                if default
                else f"| `{s.env}` | (empty) | {s.doc} |"
            )
    return "\n".join(rows)
