"""Shared by the discrete-diffusion tests: the CLI's bad-input contract (one `error:` line on stderr, exit 2)."""
import pytest

from unigen.cli import main


@pytest.fixture
def exit_line(capsys):
    """`exit_line(argv)`: run `unigen argv`, check it exits 2 with one `error: ...` line, and return that line."""
    def run(argv: list[str]) -> str:
        with pytest.raises(SystemExit) as e:
            main(argv)
        err = capsys.readouterr().err
        assert e.value.code == 2 and err.count("\n") == 1 and err.startswith("error: ")
        return err
    return run
