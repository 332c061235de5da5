"""The README states the two commands first and documents every setting as the code defines it."""

from __future__ import annotations

from pathlib import Path

from rinha import config

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_the_readme_opens_with_the_main_job_and_the_test_command():
    first_block = README.split("```sh", 1)[1].split("```", 1)[0]
    commands = [line.split("#")[0].strip() for line in first_block.strip().splitlines()]
    assert commands == ["make rinha", "make test"]


def test_the_configuration_tables_match_the_code():
    # Regenerate with: python -m rinha.config
    assert config.markdown_tables().strip() in README
