"""The docs say what the code does: every command line and option they show exists, every key they list is real."""

from __future__ import annotations

import argparse
import re
import shlex
from pathlib import Path

import pytest

from mirror_engine.cli import build_parser
from mirror_engine.config import DestinationConfig, MirrorConfig

REPO = Path(__file__).resolve().parents[2]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def command_lines(page: Path) -> list[str]:
    """`mirror-engine ...` lines inside fenced code blocks, continuation lines joined."""
    lines, inside = [], False
    text = page.read_text().replace("\\\n", " ")
    for line in text.splitlines():
        if line.startswith("```"):
            inside = not inside
            continue
        if inside and "mirror-engine " in line and not line.lstrip().startswith("#"):
            command = line[line.index("mirror-engine ") :].split("#")[0].split(">>")[0]
            lines.append(command.strip())
    return lines


def subcommand_help(name: str) -> str:
    parser = build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return str(subparsers.choices[name].format_help())


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_documented_command_lines_use_real_commands_and_options(page: Path) -> None:
    for command in command_lines(page):
        words = shlex.split(command)
        assert words[1] in ("run", "plan", "status", "explain", "export", "import", "verify-bundle"), command
        help_text = subcommand_help(words[1])
        for option in (word.split("=")[0] for word in words[2:] if word.startswith("--")):
            assert option in help_text, f"{page.name}: {command}: {option} is not an option of {words[1]}"


def test_every_key_in_the_config_reference_exists() -> None:
    text = (REPO / "docs" / "config.md").read_text()
    top, _, destination = text.partition("Keys of `destination:`")
    for section, model in ((top, MirrorConfig), (destination, DestinationConfig)):
        cells = re.findall(r"^\| ((?:`[a-z0-9_]+`(?:, )?)+) \|", section, re.MULTILINE)
        table_keys = {key for cell in cells for key in re.findall(r"`([a-z0-9_]+)`", cell)}
        assert table_keys <= set(model.model_fields), table_keys - set(model.model_fields)
        undocumented = set(model.model_fields) - table_keys
        assert not undocumented, f"keys missing from docs/config.md: {sorted(undocumented)}"


def test_the_reference_examples_are_valid_configs(tmp_path: Path) -> None:
    from mirror_engine.config import load_config

    for name in ("anaconda.yaml", "r.yaml"):
        config = load_config(REPO / "config" / name)
        assert config.platforms == ("linux-64",)
