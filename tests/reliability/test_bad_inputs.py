"""Bad inputs through the real pipeline: each one stops `dvc repro` with a clear error, runs
nothing downstream, and leaves the last good state recoverable.

One "good" repository is built once per session (the prepared repository with fast params:
no search, `dvc repro`, committed; see helpers.good_repo). Each case works on a full copy
of it (git, DVC cache, outputs): it writes a bad source file, bad params or a damaged
artefact, runs `dvc repro`, records what happened, then restores the last good state with
exactly the documented recovery (README, "When a stage fails": ``helpers.RECOVERY``). Three
tests read each record:

* ``test_bad_input_stops_the_pipeline``: non-zero exit, the expected stage refused, no stage
  downstream of it started, no .gitignore lost and no output left untracked by git;
* ``test_bad_input_message``: one line of the error names the file, the column or key, the
  rule and offending values;
* ``test_last_good_state_is_recoverable``: every output, metric, plot, dvc.lock and
  params.yaml is byte-identical to the good commit again; and when the case did not edit a
  tracked output by hand, plain `dvc checkout` already succeeds (a failed stage leaves no
  new output behind: its writes are staged and moved in only on success).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ..conftest import ROOT, run
from .helpers import (
    RECOVERY,
    STAGES,
    TARGETS,
    clone,
    diff_state,
    downstream,
    dvc,
    edit_params,
    error_text,
    failed_stage,
    git_status,
    gitignores,
    line_with_all,
    outputs_by_stage,
    point_source_at,
    ran,
    real_csv_bytes,
    real_frame,
    recover,
    state,
)

SNAP = "data/raw/snapshot.parquet"
#: Cases run concurrently, each in its own copy (the machine may be shared: keep it small).
WORKERS = int(os.environ.get("RELIABILITY_WORKERS", "1"))
Prepare = Callable[[Path, Path], None]  # (repository copy, folder for the bad files)


@dataclass(frozen=True)
class Case:
    id: str
    prepare: Prepare
    stage: str | None  # the stage that must refuse the input (None: any first stage)
    fragments: tuple[str, ...]  # all on one line: the file, the column or key, the rule, values
    also: tuple[str, ...] = ()  # another acceptable set of fragments (an equally clear message)
    args: tuple[str, ...] = ("repro", *TARGETS)
    hand_edit: bool = False  # the case edits a DVC-tracked output by hand
    xfail: dict[str, str] = field(default_factory=dict)  # test name -> product gap


# --------------------------------------------------------------------------- bad sources


def source_bytes(name: str, content: Callable[[], bytes] | None) -> Prepare:
    """A source file ``name`` holding ``content()`` (None: the file does not exist)."""

    def prepare(repo: Path, bad: Path) -> None:
        if content is not None:
            (bad / name).write_bytes(content())
        point_source_at(repo, bad / name)

    return prepare


def source_url(url: str) -> Prepare:
    def prepare(repo: Path, bad: Path) -> None:
        point_source_at(repo, url)

    return prepare


def truncated_csv() -> bytes:
    return real_csv_bytes().rstrip(b"\n")[:-20]


def semicolon_csv() -> bytes:
    return real_frame().to_csv(index=False, sep=";").encode()


def utf16_csv() -> bytes:
    return real_csv_bytes().decode("utf-8").encode("utf-16")


def header_only_csv() -> bytes:
    return real_csv_bytes().split(b"\n", 1)[0] + b"\n"


# --------------------------------------------------------------------------- contract breaches


def table(mutate: Callable[[pd.DataFrame], pd.DataFrame], fmt: str = "csv") -> Prepare:
    """The real table, changed by ``mutate``, written as CSV (or Parquet) and used as source."""

    def prepare(repo: Path, bad: Path) -> None:
        frame = mutate(real_frame())
        path = bad / f"incoming.{fmt}"
        if fmt == "csv":
            frame.to_csv(path, index=False)
        else:
            frame.to_parquet(path, index=False)
        point_source_at(repo, path)

    return prepare


def at(row: int, column: str, value) -> Callable[[pd.DataFrame], pd.DataFrame]:
    def mutate(d: pd.DataFrame) -> pd.DataFrame:
        if isinstance(value, str) and d[column].dtype != object:
            d[column] = d[column].astype(object)
        d.loc[row, column] = value
        return d

    return mutate


def sales_as_text(d: pd.DataFrame) -> pd.DataFrame:
    d["sales"] = d["sales"].map(lambda v: None if pd.isna(v) else f"{v:g}").astype(object)
    return d


def missing_burst(d: pd.DataFrame) -> pd.DataFrame:
    d.loc[d.index[:2000], "median"] = np.nan
    return d


# --------------------------------------------------------------------------- bad params


def params(edit: Callable[[dict], None]) -> Prepare:
    def prepare(repo: Path, bad: Path) -> None:
        edit_params(repo, edit)

    return prepare


def rename(section: str, old: str, new: str) -> Callable[[dict], None]:
    def edit(data: dict) -> None:
        node = data[section]
        node[new] = node.pop(old)

    return edit


def setting(dotted: str, value) -> Callable[[dict], None]:
    def edit(data: dict) -> None:
        node = data
        *parents, last = dotted.split(".")
        for key in parents:
            node = node[key]
        node[last] = value

    return edit


# --------------------------------------------------------------------------- damaged artefacts


def damage(path: str, transform: Callable[[bytes], bytes]) -> Prepare:
    def prepare(repo: Path, bad: Path) -> None:
        target = repo / path
        target.write_bytes(transform(target.read_bytes()))

    return prepare


def flip_middle(data: bytes) -> bytes:
    out = bytearray(data)
    middle = len(out) // 2
    for i in range(middle, middle + 16):
        out[i] ^= 0xFF
    return bytes(out)


def untrusted_model(data: bytes) -> bytes:
    import skops.io as sio
    from sklearn.preprocessing import FunctionTransformer

    return sio.dumps(FunctionTransformer(func=os.system))


def swap_model(repo: Path, bad: Path) -> None:
    (repo / "models/model.skops").write_bytes((repo / "models/deployed.skops").read_bytes())


def untrusted_model_and_metadata(repo: Path, bad: Path) -> None:
    import hashlib
    import json

    data = untrusted_model(b"")
    (repo / "models/model.skops").write_bytes(data)
    meta = json.loads((repo / "models/metadata.json").read_text())
    meta["sha256"] = hashlib.sha256(data).hexdigest()
    (repo / "models/metadata.json").write_text(json.dumps(meta, indent=2))


def better_best_rule(data: bytes) -> bytes:
    import json

    obj = json.loads(data)
    obj["rules"][obj["best_rule"]]["mae"] *= 10
    obj["best"]["mae"] *= 10
    return json.dumps(obj, indent=2).encode()


def without_best_rule(data: bytes) -> bytes:
    import json

    obj = json.loads(data)
    del obj["best_rule"]
    return json.dumps(obj, indent=2).encode()


CASES = [
    # ---- source: the collect stage refuses the file, naming it
    # refused by check_params before DVC looks at the source (source.watch)
    Case("source_missing_file", source_bytes("absent.csv", None), "check_params",
         ("params.yaml", "'source.uri'", "absent.csv", "not found")),
    Case("source_empty_file", source_bytes("empty.csv", bytes), "collect",
         ("empty.csv", "the file is empty", "0 bytes")),
    Case("source_header_only", source_bytes("header_only.csv", header_only_csv), "collect",
         ("header_only.csv", "but no rows", "'city'", "'sales'")),
    Case("source_truncated_last_line", source_bytes("truncated.csv", truncated_csv), "collect",
         ("truncated.csv", "is truncated", "line 8603", "6 fields", "header has 9",
          "Wichita Falls")),
    Case("source_wrong_delimiter", source_bytes("semicolon.csv", semicolon_csv), "collect",
         ("semicolon.csv", "expected comma-separated", "semicolon-separated", "city;year")),
    Case("source_wrong_encoding", source_bytes("utf16.csv", utf16_csv), "collect",
         ("utf16.csv", "not UTF-8", "byte 0xff at offset 0")),
    Case("source_parquet_not_parquet", source_bytes("table.parquet", real_csv_bytes),
         "collect", ("table.parquet", "not a readable Parquet file")),
    Case("source_unreachable_url", source_url("http://127.0.0.1:9/x.csv"), "check_params",
         ("params.yaml", "'source.uri'", "'http://127.0.0.1:9/x.csv'", "cannot be reached",
          "Connection refused")),
    # ---- contract: the validate stage refuses the snapshot, one line per broken rule
    Case("contract_missing_column", table(lambda d: d.drop(columns=["median"])), "validate",
         (SNAP, "column 'median'", "rule 'required'", "found columns")),
    Case("contract_extra_column", table(lambda d: d.assign(comment="x")), "validate",
         (SNAP, "rule 'extra_columns'", "'comment'", "not declared")),
    Case("contract_numbers_as_text_csv", table(at(5, "sales", "1,234")), "validate",
         (SNAP, "column 'sales'", "rule 'type'", "'1,234'")),
    Case("contract_numbers_as_text_parquet", table(sales_as_text, "parquet"), "validate",
         (SNAP, "column 'sales'", "rule 'type'", "'72'", "text, not numbers")),
    Case("contract_out_of_range", table(at(10, "inventory", 999.0)), "validate",
         (SNAP, "column 'inventory'", "rule 'max'", "999", "above the maximum 120")),
    Case("contract_negative_sales", table(at(3, "sales", -5.0)), "validate",
         (SNAP, "column 'sales'", "rule 'min'", "-5", "below the minimum 0")),
    Case("contract_duplicate_keys",
         table(lambda d: pd.concat([d, d.iloc[[7]]], ignore_index=True)), "validate",
         (SNAP, "rule 'unique_key'", "city+year+month", "Abilene|2000|8")),
    Case("contract_month_out_of_calendar", table(at(4, "month", 13)), "validate",
         (SNAP, "column 'month'", "rule 'max'", "13", "above the maximum 12")),
    Case("contract_future_dates", table(at(4, "year", 2099)), "validate",
         (SNAP, "rule 'no_future'", "2099-05", "in the future")),
    Case("contract_missing_burst", table(missing_burst), "validate",
         (SNAP, "column 'median'", "rule 'max_missing'", "above the contract's limit 10.0%")),
    Case("contract_unseen_city", table(at(0, "city", "Atlantis")), "validate",
         (SNAP, "column 'city'", "rule 'allowed'", "Atlantis")),
    Case("contract_constant_column", table(lambda d: d.assign(listings=1.0)), "validate",
         (SNAP, "column 'listings'", "rule 'not_constant'", "[1.0]")),
    Case("contract_too_few_rows", table(lambda d: d.iloc[:500]), "validate",
         (SNAP, "rule 'min_rows'", "500 rows", "at least 1000")),
    # ---- params: the first stage that reads the key refuses it
    Case("params_unknown_key", params(setting("train.foo", 1)), "check_params",
         ("params.yaml", "unknown params key", "'train.foo'")),
    Case("params_unknown_top_level_key", params(setting("trian", {"seed": 1})), "check_params",
         ("params.yaml", "unknown params key", "'trian'")),
    # DVC itself refuses (before the stage runs): "Parameters 'source.licence' are missing
    # from 'params.yaml'"; a whole-file params check would name the misspelling instead
    Case("params_misspelled_tracked_key", params(rename("source", "licence", "license")),
         "check_params", ("params.yaml", "'source.licence'", "are missing"),
         also=("params.yaml", "unknown params key", "'source.license'")),
    Case("params_misspelled_key_in_section",
         params(lambda d: d["train"]["search"].update(enabeld=d["train"]["search"].pop(
             "enabled"))), "check_params",
         ("params.yaml", "unknown params key", "'train.search.enabeld'")),
    Case("params_wrong_type", params(setting("features.level_window", "twelve")),
         "check_params",
         ("params.yaml", "'features.level_window'", "must be an integer", "'twelve'")),
    Case("params_empty_training_window", params(setting("windows.train_end", "1999-06")),
         "check_params", ("params.yaml", "training window is empty", "train_end 1999-06",
                      "train_start 2000-01")),
    Case("params_test_overlaps_training", params(setting("windows.test_start", "2011-06")),
         "check_params", ("params.yaml", "test window must start after the training window",
                      "test_start 2011-06", "train_end 2011-11")),
    # the estimator and its hyperparameters are checked by check_params (against
    # scikit-learn's own constraints), before any stage runs
    Case("params_unknown_estimator", params(setting("train.estimator", "XGBRegressor")),
         "check_params",
         ("params.yaml", "'train.estimator'", "must be one of", "'XGBRegressor'")),
    Case("params_unaccepted_hyperparameter",
         params(setting("train.hyperparameters.n_estimators", 100)), "check_params",
         ("params.yaml", "'train.hyperparameters.n_estimators'", "does not accept",
          "'n_estimators'")),
    # ---- artefacts edited by hand: the stage that reads them refuses them
    Case("model_truncated", damage("models/model.skops", lambda b: b[: len(b) // 2]),
         "evaluate", ("models/model.skops", "does not match the 'sha256'",
                      "models/metadata.json", "replaced or edited"),
         args=("repro", "--single-item", "evaluate"), hand_edit=True),
    Case("model_tampered", damage("models/model.skops", flip_middle), "drift",
         ("models/model.skops", "does not match the 'sha256'", "models/metadata.json"),
         args=("repro", "--single-item", "drift"), hand_edit=True),
    # another valid model, made only of trusted types (the deployed one): refused all the same
    Case("model_swapped", swap_model, "evaluate",
         ("models/model.skops", "does not match the 'sha256'", "models/metadata.json"),
         args=("repro", "--single-item", "evaluate"), hand_edit=True),
    # an attacker who also rewrites the metadata's sha256 meets the trusted-types list
    Case("model_untrusted_type", untrusted_model_and_metadata, "evaluate",
         ("models/model.skops", "outside the trusted list", "'posix.system'", "refusing"),
         args=("repro", "--single-item", "evaluate"), hand_edit=True),
    Case("metrics_baseline_invalid_json", damage("metrics/baseline.json", lambda b: b[:-40]),
         "evaluate", ("metrics/baseline.json", "not valid JSON"),
         args=("repro", "--single-item", "evaluate")),
    Case("metrics_baseline_missing_key", damage("metrics/baseline.json", without_best_rule),
         "evaluate", ("metrics/baseline.json", "'best_rule'", "missing"),
         args=("repro", "--single-item", "evaluate")),
    # a forged score would turn a gain of 8% into 90%: evaluate recomputes the rules' scores
    Case("metrics_baseline_forged_score", damage("metrics/baseline.json", better_best_rule),
         "evaluate", ("metrics/baseline.json", "do not match the rule forecasts", "recorded",
                      "recomputed"),
         args=("repro", "--single-item", "evaluate")),
]  # fmt: skip


@dataclass
class Outcome:
    code: int
    output: str
    error: str
    ran: list[str]
    failed: str | None
    status_after_failure: list[str]
    gitignores_after_failure: dict[str, str]
    changed_by_failure: dict
    plain_checkout_code: int | None
    plain_checkout_output: str
    checkout_code: int
    checkout_output: str
    changed_after_recovery: dict
    status_after_recovery: list[str]
    seconds: float
    edited: set[str]  # files the case itself changed (params.yaml, a damaged artefact)


_OUTCOMES: dict[str, Outcome] = {}


@pytest.fixture(scope="module")
def good_outs(good) -> dict[str, set[str]]:
    return outputs_by_stage(good)


@pytest.fixture(scope="module")
def outcome(request, good, good_state, tmp_path_factory) -> Callable[[Case], Outcome]:
    """Run each case once, in its own copy of the good repository; the tests read the
    recorded outcomes. The three tests of a case form one xdist group, so the case runs on
    one worker only. Without xdist, RELIABILITY_WORKERS > 1 runs the selected cases
    concurrently, in threads (each case is a few short processes)."""
    pool = ThreadPoolExecutor(max_workers=WORKERS)
    futures = {}

    def submit(case: Case) -> None:
        if case.id not in futures and case.id not in _OUTCOMES:
            folder = tmp_path_factory.mktemp(case.id)
            futures[case.id] = pool.submit(_run_case, case, good, good_state, folder)

    if WORKERS > 1 and not os.environ.get("PYTEST_XDIST_WORKER"):
        for item in request.session.items:
            case = getattr(item, "callspec", None) and item.callspec.params.get("case")
            if isinstance(case, Case):
                submit(case)

    def get(case: Case) -> Outcome:
        if case.id not in _OUTCOMES:
            submit(case)
            _OUTCOMES[case.id] = futures[case.id].result(timeout=600)
        return _OUTCOMES[case.id]

    yield get
    for future in futures.values():
        future.cancel()
    pool.shutdown(wait=True)


def _run_case(case: Case, good: Path, good_state: dict, folder: Path) -> Outcome:
    t0 = time.monotonic()
    bad = folder / "bad"
    bad.mkdir()
    repo = clone(good, folder / "repo")
    case.prepare(repo, bad)
    edited = set(diff_state(good_state, state(repo)))
    proc = dvc(repo, *case.args, timeout=300)
    after_failure = dict(
        status_after_failure=git_status(repo),
        gitignores_after_failure=gitignores(repo),
        changed_by_failure=diff_state(good_state, state(repo)),
    )
    plain = None
    if not case.hand_edit:  # a failed stage left no new output: plain checkout suffices
        plain = recover(repo, plain=True)
    checkout = run(["bash", "-c", RECOVERY], repo, check=False, timeout=180)
    return Outcome(
        code=proc.returncode,
        output=proc.stdout + proc.stderr,
        error=error_text(proc),
        ran=ran(proc.stdout),
        failed=failed_stage(proc.stdout + proc.stderr),
        plain_checkout_code=plain and plain.returncode,
        plain_checkout_output=plain.stdout + plain.stderr if plain else "",
        checkout_code=checkout.returncode,
        checkout_output=checkout.stdout + checkout.stderr,
        changed_after_recovery=diff_state(good_state, state(repo)),
        status_after_recovery=git_status(repo),
        seconds=time.monotonic() - t0,
        edited=edited,
        **after_failure,
    )


def cases_for(test: str) -> list:
    """One param per case; the tests of a case share an xdist group (one worker runs it)."""
    return [
        pytest.param(
            c,
            id=c.id,
            marks=[
                pytest.mark.xdist_group(f"bad-input-{c.id}"),
                *(
                    [pytest.mark.xfail(strict=True, reason=c.xfail[test])]
                    if test in c.xfail
                    else []
                ),
            ],
        )
        for c in CASES
    ]


def test_the_recovery_run_here_is_the_one_the_readme_documents():
    readme = (ROOT / "README.md").read_text()
    assert f"`{RECOVERY}`" in readme or f"\n{RECOVERY}\n" in readme


@pytest.mark.slow
@pytest.mark.parametrize("case", cases_for("stops"))
def test_bad_input_stops_the_pipeline(case, outcome, good, good_outs):
    out = outcome(case)
    assert out.code != 0, f"dvc exited 0 on a bad input:\n{out.output[-3000:]}"
    if case.stage is None:
        assert out.failed is not None, out.output[-3000:]
    else:
        assert out.failed == case.stage, out.output[-3000:]
    # the refusing stage is the last one started (or DVC refused before starting it) ...
    assert out.ran[-1:] in ([], [out.failed]), out.ran
    # ... and nothing downstream of it ran
    later = downstream(out.failed) if out.failed in STAGES else set(STAGES)
    assert not later & set(out.ran), f"{out.failed} failed but {out.ran} ran"
    # nothing lost: only the outputs of the stages that ran or failed (DVC deletes a stage's
    # outputs before running it, even when it then refuses to: a missing tracked param) and
    # dvc.lock changed, so the model and the evaluation survive any failure before them
    ran_outs = set().union(*(good_outs.get(s, set()) for s in [*out.ran, out.failed]))
    touched = set(out.changed_by_failure) - out.edited - ran_outs - {"dvc.lock"}
    print(f"{case.id}: ran {out.ran}, changed {sorted(set(out.changed_by_failure) - out.edited)}")
    assert not touched, f"{sorted(touched)} changed although no stage producing them ran"
    # no .gitignore entry dropped (treeverse/dvc#11091), no output left untracked by git
    assert out.gitignores_after_failure == gitignores(good)
    untracked = [s for s in out.status_after_failure if s.startswith("??")]
    assert not untracked, untracked


@pytest.mark.slow
@pytest.mark.parametrize("case", cases_for("message"))
def test_bad_input_message(case, outcome):
    out = outcome(case)
    assert out.code != 0
    line = line_with_all(out.error, case.fragments) or (
        case.also and line_with_all(out.error, case.also)
    )
    print(f"{case.id} ({out.seconds:.1f}s): {line or out.error[-500:]}")
    assert line, (
        f"no line of the error holds all of {case.fragments}; the error was:\n{out.error[-3000:]}"
    )


@pytest.mark.slow
@pytest.mark.parametrize("case", cases_for("recover"))
def test_last_good_state_is_recoverable(case, outcome):
    out = outcome(case)
    if not case.hand_edit:
        assert out.plain_checkout_code == 0, out.plain_checkout_output
    assert out.checkout_code == 0, out.checkout_output
    assert out.changed_after_recovery == {}, out.changed_after_recovery
    assert out.status_after_recovery == [], out.status_after_recovery


# --------------------------------------------------------------------------- DVC notices hand edits

HAND_EDITS = {
    "models/model.skops": (lambda b: b[: len(b) // 2], "train"),
    "metrics/baseline.json": (lambda b: b[:-40], "baseline"),
    "metrics/baseline.json#key": (without_best_rule, "baseline"),
}


@pytest.mark.slow
@pytest.mark.parametrize("target", sorted(HAND_EDITS))
def test_plain_repro_notices_a_hand_edited_output(target, good, good_state, tmp_path):
    """`dvc repro` sees that an output no longer matches dvc.lock and gives back the recorded
    one (from its run cache) before any stage reads it: nothing downstream consumes the edit."""
    transform, producer = HAND_EDITS[target]
    path = target.split("#")[0]
    repo = clone(good, tmp_path / "repo")
    (repo / path).write_bytes(transform((repo / path).read_bytes()))
    status = dvc(repo, "status", producer, check=True).stdout
    assert "modified" in status and path in status
    proc = dvc(repo, "repro", *TARGETS, check=True)
    restored = f"Stage '{producer}' is cached - skipping run, checking out outputs"
    assert restored in proc.stdout or producer in ran(proc.stdout), proc.stdout
    assert not downstream(producer) & set(ran(proc.stdout)), proc.stdout
    assert diff_state(good_state, state(repo)) == {}
