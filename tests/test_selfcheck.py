"""course_lib.selfcheck: a miss fails on a measured profile and warns on one not yet measured."""
import json
from types import SimpleNamespace

import pytest

from course_lib import selfcheck


def _profile(name, seed=0):
    return SimpleNamespace(name=name, seed=seed)


def test_a_miss_names_the_number_its_bar_and_why(capsys):
    check = selfcheck.SelfCheck("06", _profile("cpu"), hint="Run the training cell again.")
    check.at_least("colour (seen)", 0.8, 0.9, why="colour is learned first")
    check.at_most("FD", 100.0, 700.0)
    check.record("minutes", 4.2)
    with pytest.raises(selfcheck.SelfCheckFailed) as err:
        check.done()
    text = str(err.value)
    assert "1 of 3" in text and "colour (seen): 0.800 (bar >= 0.900)" in text
    assert "colour is learned first" in text and "Run the training cell again." in text
    assert "MISS colour" in capsys.readouterr().out


def test_a_nan_never_passes():
    check = selfcheck.SelfCheck("06", _profile("smoke"))
    check.at_least("colour", float("nan"), 0.1)
    with pytest.raises(selfcheck.SelfCheckFailed):
        check.done()


def test_bars_of_an_unmeasured_profile_warn_with_the_number(capsys):
    assert "gpu" not in selfcheck.MEASURED_PROFILES
    check = selfcheck.SelfCheck("06", _profile("gpu"))
    check.at_least("all four right (seen)", 0.62, 0.97)
    with pytest.warns(UserWarning, match=r"all four right \(seen\): 0.620 \(bar >= 0.970\).*not yet measured"):
        check.done()
    assert "WARN all four" in capsys.readouterr().out


def test_the_numbers_are_written_for_the_runner(tmp_path, monkeypatch):
    monkeypatch.setenv(selfcheck.RESULTS_ENV, str(tmp_path))
    check = selfcheck.SelfCheck("03", _profile("cpu", seed=2))
    check.at_least("colour (seen)", 0.95, 0.8)
    check.done()
    data = json.loads((tmp_path / "03.json").read_text())
    assert data["seed"] == 2 and data["passed"] and data["checks"][0]["value"] == 0.95
    assert selfcheck.read_results(tmp_path)["03"]["profile"] == "cpu"
