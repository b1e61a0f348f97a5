"""Every command and option of the CLI says what it is for, and failures are one line."""

from __future__ import annotations

import argparse
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from switchboard.errors import BadRequest, ConfigError
from switchboard.services.cli import build_parser
from switchboard.services.cli_errors import CliError, describe


def _walk(parser: argparse.ArgumentParser, path: str) -> Iterator[tuple[str, str | None]]:
    """(where, help) for every command and every option, all the way down."""
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in action._choices_actions}
            for name, child in action.choices.items():
                yield f"{path} {name}", helps.get(name)
                yield from _walk(child, f"{path} {name}")
            continue
        yield f"{path} {'/'.join(action.option_strings) or action.dest}", action.help


def test_every_command_and_option_has_help() -> None:
    seen = list(_walk(build_parser(), "switchboard"))
    assert len(seen) > 40  # the walk reached the subcommands' options
    missing = [where for where, text in seen if not text or text == argparse.SUPPRESS]
    assert missing == [], f"no help text: {missing}"


def test_top_level_help_lists_commands_and_points_to_the_readme() -> None:
    text = build_parser().format_help()
    for command in ("dev", "serve", "apply", "send", "receive", "reseal", "schemas"):
        assert f"    {command} " in text
    assert "README" in text and "SWITCHBOARD_DEBUG=1" in text


@pytest.mark.parametrize(("exc", "line", "code"), [
    (CliError("do this"), "do this", 2),
    (ConfigError("SWITCHBOARD_X is bad"), "configuration error: SWITCHBOARD_X is bad", 2),
    (BadRequest("invalid_hub_file", "hub 'a' is declared twice"),
     "hub 'a' is declared twice", 2),
    (FileNotFoundError(2, "No such file or directory", "hub.yaml"), "no such file: hub.yaml",
     2),
    (KeyboardInterrupt(), "interrupted", 130),
])
def test_errors_become_one_line_with_an_exit_code(exc: BaseException, line: str,
                                                   code: int) -> None:
    assert describe(exc) == (line, code)


def test_an_unreachable_hub_says_to_start_it() -> None:
    exc = httpx.ConnectError("refused", request=httpx.Request("GET", "http://127.0.0.1:1/x"))
    line, code = describe(exc, "http://127.0.0.1:1")
    assert line.startswith("cannot reach http://127.0.0.1:1: is the hub running? "
                           "(switchboard dev)") and code == 1


def test_yaml_errors_name_the_line_and_multiline_messages_are_cut() -> None:
    with pytest.raises(yaml.YAMLError) as info:
        yaml.safe_load("hubs:\n  - name: a\n   x: [\n")
    line, code = describe(info.value)
    assert line.startswith("not valid YAML: line 3, column 4: ") and code == 2
    line, code = describe(RuntimeError("first\nsecond"))
    assert "\n" not in line and line.startswith("unexpected RuntimeError: first") and code == 1


def _script(*args: str) -> subprocess.CompletedProcess[str]:
    root = Path(__file__).resolve().parents[2]
    return subprocess.run([str(root / "switchboard"), *args], capture_output=True, text=True,
                          timeout=120, cwd=root)


@pytest.mark.parametrize("flag", ["--help", "-h", "help"])
def test_the_script_explains_itself_then_lists_the_cli_commands(flag: str) -> None:
    done = _script(flag)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    for own in ("  dev ", "  test ", "  setup ", "  lock ", "Anything else goes to the "
                "switchboard CLI"):
        assert own in out
    listed = out.split("The switchboard CLI's commands")[1]
    for command in ("dev", "serve", "apply", "send", "receive", "schemas", "reseal"):
        assert f"    {command} " in listed


@pytest.mark.parametrize(("command", "says"), [
    ("test", "go to both pytest runs"),
    ("setup", "requirements.lock"),
    ("lock", "--upgrade moves every pin"),
    ("dev", "--replace"),  # set up, then the CLI's own help for dev
])
def test_the_script_commands_show_help_instead_of_running(command: str, says: str) -> None:
    done = _script(command, "--help")
    assert done.returncode == 0, done.stderr
    assert says in done.stdout and "== ruff" not in done.stdout


def test_a_broker_that_cannot_start_is_one_line() -> None:
    from switchboard.brokers import BrokerError

    line, code = describe(BrokerError("tansu exited with code 1 during startup; last lines "
                                      "of /x/tansu.log:\nboom\nbang"))
    assert line == ("broker: tansu exited with code 1 during startup; last lines of "
                    "/x/tansu.log: …") and code == 1
