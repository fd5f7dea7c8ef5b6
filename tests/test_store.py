"""Store round trip, claims, resume of interrupted runs, bad URLs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from sgid_bench.errors import UserError
from sgid_bench.store import DONE, FAILED, RUNNING, Run, Store


def fields(**kw: Any) -> dict[str, Any]:
    base = {"method": "none", "backbone": "resnet50", "dataset": "shapes", "profile": "quick",
            "config": {"a": 1}, "models": {"backbone": "tiny/resnet50"}, "tiny_models": True,
            "versions": {"torch": "x"}, "git_revision": None}
    return {**base, **kw}


@pytest.fixture
def store(db_url: str) -> Store:
    return Store(db_url)


def test_round_trip(store: Store) -> None:
    run_id = store.claim("h1", 0, **fields())
    assert run_id is not None
    store.finish(run_id, top1=81.5, top5=99.0, loss=0.4, per_class={"circle": 90.0},
                 extra={"lr": 0.1})
    (row,) = store.runs()
    assert (row.status, row.top1, row.per_class, row.extra) == (
        DONE, 81.5, {"circle": 90.0}, {"lr": 0.1})
    assert row.config == {"a": 1}
    assert row.wall_time_s is not None
    assert row.wall_time_s >= 0
    assert Store(store.url).get("h1", 0).top1 == 81.5  # persisted, new connection


def test_claim_is_exclusive_until_failed(store: Store) -> None:
    first = store.claim("h", 0, **fields())
    assert store.claim("h", 0, **fields()) is None  # running here
    store.fail(first, "boom")  # type: ignore[arg-type]
    assert store.get("h", 0).error == "boom"
    assert store.claim("h", 0, **fields()) == first  # a failed run is re-claimed
    store.finish(first, top1=1.0)  # type: ignore[arg-type]
    assert store.claim("h", 0, **fields()) is None  # done stays done...
    assert store.claim("h", 0, force=True, **fields()) == first  # ...unless forced
    assert store.get("h", 0).status == RUNNING


def test_interrupted_run_is_marked_failed_on_next_start(store: Store) -> None:
    run_id = store.claim("h", 0, **fields())
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    with store.session() as s:  # the row now belongs to a process that has ended
        s.get_one(Run, run_id).pid = int(dead.stdout)
    assert store.reap_interrupted() == 1
    row = store.get("h", 0)
    assert row.status == FAILED
    assert "interrupted" in row.error
    assert store.claim("h", 0, **fields()) == run_id


def test_unwritable_location_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="cannot open database"):
        Store(f"sqlite:///{tmp_path}/missing/dir/results.db")


def test_malformed_url_is_a_user_error() -> None:
    with pytest.raises(UserError, match="cannot use database URL"):
        Store("not a url")


def test_sqlite_uses_wal(store: Store) -> None:
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"


# -- settings and messages ---------------------------------------------------------------


@pytest.mark.parametrize(("raw", "lease"), [(None, 300.0), ("", 300.0), ("42", 42.0),
                                            ("0.5", 0.5)])
def test_lease_comes_from_sgid_bench_lease(monkeypatch: pytest.MonkeyPatch, db_url: str,
                                           raw: str | None, lease: float) -> None:
    from sgid_bench.store import default_lease

    if raw is None:
        monkeypatch.delenv("SGID_BENCH_LEASE", raising=False)
    else:
        monkeypatch.setenv("SGID_BENCH_LEASE", raw)
    assert default_lease() == lease
    assert Store(db_url).lease_s == lease
    assert Store(db_url, lease_s=7).lease_s == 7  # an explicit lease wins


@pytest.mark.parametrize("raw", ["abc", "0", "-5", "inf", "nan"])
def test_a_lease_that_is_not_positive_seconds_is_a_user_error(
        monkeypatch: pytest.MonkeyPatch, raw: str) -> None:
    from sgid_bench.store import default_lease

    monkeypatch.setenv("SGID_BENCH_LEASE", raw)
    with pytest.raises(UserError) as err:
        default_lease()
    assert str(err.value) == (f"SGID_BENCH_LEASE={raw!r} is not a number of seconds > 0; set "
                              "it to e.g. 300 or unset it")


def test_redact_hides_the_password_of_the_url_wherever_it_appears() -> None:
    from sgid_bench.store import redact

    url = "postgresql+psycopg://alice:s3cr%2Fet@db.example/results"  # password s3cr/et
    message = "auth failed for alice with s3cr/et (url-encoded: s3cr%2Fet)"
    assert redact(message, url) == "auth failed for alice with *** (url-encoded: ***)"
    assert redact("cannot reach postgresql://bob:hunter2@host/db now") == (
        "cannot reach postgresql://bob:***@host/db now")
    assert redact("nothing secret", "not a url") == "nothing secret"
    assert redact("no password here", "sqlite:///x.db") == "no password here"


def test_only_an_in_memory_store_warns_that_results_are_discarded(db_url: str) -> None:
    assert Store(db_url).discard_warning() is None
    warning = Store("sqlite://").discard_warning()
    assert warning is not None
    assert warning.startswith("Warning: --db sqlite:// is an in-memory database: ")
    assert "every result is discarded when this command ends" in warning
    assert warning.endswith("; pass a file, e.g. --db sqlite:///sgid-bench.db")


@pytest.mark.parametrize("seed", [-(2**63), 0, 2**63 - 1])
def test_every_64_bit_seed_is_storable(store: Store, seed: int) -> None:
    from sgid_bench.store import check_storable

    check_storable(seed, {"a": 1.0})
    run_id = store.claim("h", seed, **fields())
    assert run_id is not None
    assert store.get("h", seed).seed == seed


@pytest.mark.parametrize("seed", [-(2**63) - 1, 2**63, 2**64])
def test_a_seed_beyond_64_bits_is_refused_before_claiming(store: Store, seed: int) -> None:
    with pytest.raises(UserError) as err:
        store.claim("h", seed, **fields())
    assert str(err.value) == (f"seed {seed} does not fit in 64 bits; pass a seed below 2**63")
    assert store.runs(None) == []


@pytest.mark.parametrize(("config", "name"), [
    ({"lr": float("nan")}, "lr=nan"),
    ({"train": {"lr": float("inf")}}, "train.lr=inf"),
    ({"aug": {"sizes": [1.0, 2.0, float("-inf")]}}, "aug.sizes[2]=-inf"),
    ({"aug": {"grid": ([0.5], (1.0, float("nan")))}}, "aug.grid[1][1]=nan"),
    ([{"w": float("nan")}], "[0].w=nan"),
])
def test_a_non_finite_parameter_is_named_and_refused_before_claiming(
        store: Store, config: Any, name: str) -> None:
    with pytest.raises(UserError) as err:
        store.claim("h", 0, **fields(config=config))
    assert str(err.value) == (f"parameter {name} is not a finite number (NaN or infinity "
                              "cannot be stored as JSON); pass a finite value")
    assert store.runs(None) == []


# -- claims and reading ------------------------------------------------------------------


def test_a_claim_records_its_process_and_a_token_that_fits_its_column(store: Store) -> None:
    import os

    store.claim("h", 0, **fields())
    row = store.get("h", 0)
    assert row.pid == os.getpid()
    assert len(row.claim_token) == 32  # String(32): PostgreSQL refuses a longer one
    int(row.claim_token, 16)


def test_a_reclaimed_run_starts_with_no_result_of_the_previous_claim(store: Store) -> None:
    run_id = store.claim("h", 0, **fields())
    store.finish(run_id, top1=81.5, top5=99.0, loss=0.4,  # type: ignore[arg-type]
                 per_class={"circle": 90.0}, extra={"lr": 0.1})
    assert store.claim("h", 0, force=True, **fields()) == run_id
    row = store.get("h", 0)
    assert (row.status, row.error, row.finished_at, row.wall_time_s) == (
        RUNNING, None, None, None)
    assert (row.top1, row.top5, row.loss, row.per_class, row.extra) == (
        None, None, None, None, None)


def test_a_claim_touches_only_its_own_config_and_seed(store: Store) -> None:
    failed = store.claim("h1", 0, **fields())
    store.fail(failed, "boom")  # type: ignore[arg-type]
    other_seed = store.claim("h1", 1, **fields())
    other_config = store.claim("h2", 0, **fields())
    assert other_seed is not None
    assert other_config is not None
    # Both are running here: claiming them again must not take the failed (h1, 0) instead.
    assert store.claim("h1", 1, **fields()) is None
    assert store.claim("h2", 0, **fields()) is None
    assert store.get("h1", 0).status == FAILED
    assert store.get("h1", 1).seed == 1
    assert store.get("h2", 0).config_hash == "h2"


def test_runs_filters_by_columns_in_claim_order(store: Store) -> None:
    specs = [("zeta", "vit"), ("alpha", "vit"), ("mid", "resnet"), ("alpha", "resnet")]
    for i, (method, backbone) in enumerate(specs):
        run_id = store.claim(f"h{i}", 0, **fields(method=method, backbone=backbone))
        store.finish(run_id, top1=float(i))  # type: ignore[arg-type]
    running = store.claim("h9", 0, **fields(method="alpha", backbone="vit"))

    def methods(*args: Any, **kw: Any) -> list[tuple[str, str]]:
        return [(r.method, r.backbone) for r in store.runs(*args, **kw)]

    assert methods() == specs  # done only, in the order they were claimed
    assert methods(backbone="vit") == specs[:2]
    assert methods(method=None, backbone="resnet") == specs[2:]  # None: no filter
    assert methods(None, method=["zeta", "alpha"]) == [specs[0], specs[1], specs[3],
                                                        ("alpha", "vit")]
    assert methods(None, method=("mid",)) == [specs[2]]
    assert [r.id for r in store.runs(RUNNING)] == [running]


def test_an_unreadable_row_is_skipped_and_reported_with_its_reason(store: Store) -> None:
    ids = []
    for seed in range(3):
        run_id = store.claim("h", seed, **fields())
        store.finish(run_id, top1=float(seed), per_class={"circle": 1.0})  # type: ignore[arg-type]
        ids.append(run_id)
    with store.engine.begin() as conn:
        conn.exec_driver_sql(f"UPDATE runs SET per_class = '{{not json' WHERE id = {ids[1]}")
    with pytest.raises(ValueError, match="Expecting property name"):
        store.runs()  # without a callback the damage is not hidden
    reported: list[tuple[int, str]] = []
    rows = store.runs(on_invalid=lambda run_id, reason: reported.append((run_id, reason)))
    assert [r.id for r in rows] == [ids[0], ids[2]]
    ((run_id, reason),) = reported
    assert run_id == ids[1]
    assert reason.startswith("JSONDecodeError: Expecting property name")


def test_the_store_is_sgid_bench_db_unless_sgid_bench_db_names_another(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SGID_BENCH_DB", raising=False)
    assert Store().sqlite_path == Path("sgid-bench.db")
    assert (tmp_path / "sgid-bench.db").is_file()
    monkeypatch.setenv("SGID_BENCH_DB", f"sqlite:///{tmp_path / 'shared.db'}")
    assert Store().sqlite_path == tmp_path / "shared.db"
    monkeypatch.setenv("SGID_BENCH_DB", "")  # set but empty: the default
    assert Store().sqlite_path == Path("sgid-bench.db")
