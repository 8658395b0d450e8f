"""`anogen-aug --help` and every subcommand's `--help`: each flag says what it means, its values and its default."""

from __future__ import annotations

import argparse
import re

import pytest

from anogen_aug.cli import build_parser, main


def _commands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    (subparsers,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(subparsers.choices)


def _documented(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    """The parser's arguments a user can see, ``--help`` itself left out."""
    return [
        a
        for a in parser._actions
        if not isinstance(a, (argparse._HelpAction, argparse._SubParsersAction))
        and a.help != argparse.SUPPRESS
    ]


def test_the_top_level_parser_documents_its_flags_and_commands():
    parser = build_parser()
    for action in _documented(parser):
        assert action.help and action.help.strip(), f"{action.option_strings} has no help"
    (subparsers,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    for choice in subparsers._choices_actions:
        assert choice.help and choice.help.strip(), f"command {choice.dest} has no help line"
    assert "learn" in parser.format_help()


@pytest.mark.parametrize("command", sorted(_commands()))
def test_every_flag_says_what_it_means_and_its_default(command):
    parser = _commands()[command]
    parser.format_help()  # a help text argparse cannot format (a stray %) raises here
    for action in _documented(parser):
        name = "/".join(action.option_strings) or action.dest
        text = action.help or ""
        meaning = re.sub(r"\(default[^)]*\)", "", text)
        assert len(meaning.split()) >= 2, f"{command} {name}: help {text!r} does not say what it means"
        if action.option_strings:  # an option: its default, or when it is required
            assert action.required or "default" in text or "required" in text, (
                f"{command} {name}: help {text!r} names no default"
            )
        for choice in action.choices or ():
            assert str(choice) in text, f"{command} {name}: help {text!r} does not list {choice!r}"


@pytest.mark.parametrize("command", ["", *sorted(_commands())])
def test_help_prints_and_exits_zero(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"] if command else ["--help"])
    assert exit_.value.code == 0
    assert "usage: anogen-aug" in capsys.readouterr().out
