"""bild-align chat, driven through standard input."""

import io
import subprocess
import sys

import pytest
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

from bild_align.configs import ChatSettings
from bild_align.pipeline.chat.console import GREEN, Console


def _console(byte_pair_dirs, colour=False):
    small_dir, large_dir = byte_pair_dirs
    output = io.StringIO()
    console = Console(
        AutoModelForSeq2SeqLM.from_pretrained(small_dir).eval(),
        AutoModelForSeq2SeqLM.from_pretrained(large_dir).eval(),
        AutoTokenizer.from_pretrained(large_dir),
        output,
        colour=colour,
        settings=ChatSettings(max_new_tokens=12),
    )
    return console, output


def test_commands_change_settings_and_outputs_show(byte_pair_dirs):
    console, output = _console(byte_pair_dirs)
    console.run(
        [
            "/show bild,large,small,speculative",
            "/rb 0",
            "/gamma 3",
            "/max 10",
            "das Haus ist alt",
            "/sample on",
            "/temperature 0.8",
            "/top-k 5",
            "/seed 3",
            "die Katze",
            "/bogus",
            "/rb -1",
            "/show beam",
            "/help",
            "/quit",
            "never decoded",
        ]
    )
    text = output.getvalue()
    blocks = [line for line in text.splitlines() if "tokens/s" in line]
    assert len(blocks) == 8  # four outputs for each of the two inputs
    assert "rb=0.0" in text and "gamma=3" in text and "max=10" in text
    assert "sampling (temperature 0.8, top-k 5" in text
    assert "unknown command /bogus" in text
    assert "/rb needs one number: >= 0" in text
    assert "unknown output beam" in text
    assert "/quit  leave" in text  # the help text
    assert "large calls/token" in text and "rollbacks" in text


def test_exact_mode_outputs_agree_and_colour_marks_small_tokens(byte_pair_dirs):
    console, output = _console(byte_pair_dirs, colour=True)
    console.run(["/show bild,large", "/rb 0", "/fb 0", "die Katze schlaeft hier"])
    lines = output.getvalue().splitlines()
    bild = next(line for line in lines if line.startswith("bild "))
    large = next(line for line in lines if line.startswith("large "))
    assert GREEN in bild  # the small model drafted tokens that were kept
    plain = bild.replace(GREEN, "").replace("\033[0m", "")
    assert plain.split(maxsplit=1)[1] == large.split(maxsplit=1)[1]  # rb = 0 is exact


@pytest.mark.slow
def test_cli_reads_standard_input(byte_pair_dirs):
    small_dir, large_dir = byte_pair_dirs
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "bild_align.cli",
            "chat",
            "--small",
            str(small_dir),
            "--large",
            str(large_dir),
            "--max-new-tokens",
            "8",
            "--show",
            "bild,speculative",
        ],
        input="das Haus\n/fb 0.2\ndie Katze\n",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("tokens/s") == 4
    assert "\033[" not in result.stdout  # no colour when not on a terminal
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "bild_align.cli",
            "chat",
            "--small",
            str(small_dir),
            "--large",
            str(large_dir),
            "--show",
            "beam",
        ],
        input="",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2 and "unknown output beam" in bad.stderr


def test_unbalanced_quote_does_not_end_the_session(byte_pair_dirs):
    console, output = _console(byte_pair_dirs)
    console.run(['/show "bild', "/settings"])
    text = output.getvalue()
    assert "cannot read that command" in text and "rb=2.0" in text  # still running after it


def test_bad_start_is_refused_before_the_first_input(byte_pair_dirs, tmp_path, capsys):
    from bild_align.cli import main
    from bild_align.testing.helpers import byte_level_model, save_with_byte_tokenizer

    small, large = map(str, byte_pair_dirs)
    other = byte_level_model()
    other.generation_config.eos_token_id = 2  # another EOS: not a pair
    other_dir = str(save_with_byte_tokenizer(other, tmp_path / "other"))
    cases = [
        (["--rb=-1"], "--rb -1.0: must be >= 0"),
        (["--top-p", "0"], "--top-p 0.0: must be in (0, 1]"),
        (["--temperature", "nan"], "finite number"),
        (["--small", other_dir], "special tokens differ"),
    ]
    for extra, message in cases:
        try:
            code = main(["chat", "--small", small, "--large", large, *extra])
        except SystemExit as exit_info:
            code = exit_info.code
        err = capsys.readouterr().err
        assert code == 2, extra
        assert message in err and "Traceback" not in err, err
