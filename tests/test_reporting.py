"""The commands report through one reporter: the command line shows it, a Python caller sees
nothing unless it asks (the results are what the command returns)."""

import logging

from bild_align.configs import CalibrateConfig
from bild_align.pipeline.calibrate.command import run_calibration
from bild_align.reporting import report, reporting


def test_reports_show_only_when_asked(capsys, caplog):
    with reporting(False):  # a Python caller: nothing on stdout, warnings to the logger
        report("a line of output")
        with caplog.at_level(logging.WARNING, logger="bild_align"):
            report("bild-align: warning: a note", stderr=True)
    assert capsys.readouterr().out == "" and "a note" in caplog.text
    with reporting():  # the command line
        report("a line of output")
        report("a note", stderr=True)
    shown = capsys.readouterr()
    assert shown.out == "a line of output\n" and shown.err == "a note\n"


def test_a_command_called_from_python_prints_nothing(byte_model_dir, pairs, tmp_path, capsys):
    config = CalibrateConfig(
        large=str(byte_model_dir), task=str(pairs), source_column="de", max_new_tokens=6,
        output=str(tmp_path / "cal"),
    )  # fmt: skip
    with reporting(False):
        first = run_calibration(config)
        again = run_calibration(config)  # reports that the run is complete: to nobody
    assert capsys.readouterr().out == "" and first == again
    with reporting():
        run_calibration(config)
    assert "already holds this complete run" in capsys.readouterr().out
