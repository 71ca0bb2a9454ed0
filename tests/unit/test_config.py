"""Params are validated strictly: unknown keys, missing keys and wrong types name the key."""

import copy

import pytest
import yaml

from panelcast.core.config import ParamsError, load_params, params_from_dict, parse_month
from panelcast.core.periods import format_period as format_month

from ..conftest import ROOT


@pytest.fixture
def raw():
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def test_repository_params_load(raw):
    p = params_from_dict(raw)
    assert p.problem.target == "sales"
    assert p.windows.test_start == "2011-12"


def test_unknown_key_is_named(raw):
    bad = copy.deepcopy(raw)
    bad["train"]["seeed"] = 1
    with pytest.raises(ParamsError, match=r"train\.seeed"):
        params_from_dict(bad)


def test_misspelled_section_is_named(raw):
    bad = copy.deepcopy(raw)
    bad["trian"] = bad.pop("train")
    with pytest.raises(ParamsError, match="trian"):
        params_from_dict(bad)


def test_missing_key_is_named(raw):
    bad = copy.deepcopy(raw)
    del bad["drift"]["alpha"]
    with pytest.raises(ParamsError, match=r"missing params key.*drift\.alpha"):
        params_from_dict(bad)


@pytest.mark.parametrize(
    "section,key,value,fragment",
    [
        ("train", "seed", "42", "train.seed' must be an integer"),
        ("train", "seed", True, "train.seed' must be an integer"),
        ("drift", "alpha", "small", "drift.alpha' must be a number"),
        ("features", "lags", 3, "features.lags' must be a list"),
        ("problem", "metric", "mape", "problem.metric' must be one of"),
    ],
)
def test_wrong_type_is_named(raw, section, key, value, fragment):
    bad = copy.deepcopy(raw)
    bad[section][key] = value
    with pytest.raises(ParamsError, match=fragment.replace(".", r"\.")):
        params_from_dict(bad)


def test_empty_training_window(raw):
    bad = copy.deepcopy(raw)
    bad["windows"]["train_end"] = "1999-12"
    with pytest.raises(ParamsError, match="training window is empty"):
        params_from_dict(bad)


def test_test_window_overlapping_training(raw):
    bad = copy.deepcopy(raw)
    bad["windows"]["test_start"] = "2011-06"
    with pytest.raises(ParamsError, match="must start after the training window"):
        params_from_dict(bad)


def test_bad_month_string(raw):
    bad = copy.deepcopy(raw)
    bad["windows"]["train_start"] = "2000-13"
    with pytest.raises(ParamsError, match="outside 1..12"):
        params_from_dict(bad)


def test_month_round_trip():
    assert format_month(parse_month("2011-12", "k")) == "2011-12"
    assert parse_month("2000-01", "k") == 2000 * 12


def test_load_params_names_the_file(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("problem: [unclosed\n")
    with pytest.raises(ParamsError, match="params.yaml"):
        load_params(path)
    with pytest.raises(ParamsError, match="not found"):
        load_params(tmp_path / "absent.yaml")
