"""The store at scale (issue 15, item 2): a finished unit's parts compacted into one file, atomically
(a crash between the rename and the part deletion loses nothing and counts nothing twice), the
compacted summaries table (always equal to reading every file; the newest file wins), and the
projected / filtered readers.  A real small evaluation: mobilenet_v2 on 8 images of the shared
sample, batch 2 (four parts per unit)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pyarrow.compute as pc
import pytest

import robustbench_sys
from robustbench_sys.results import store as S
from robustbench_sys.results.store import COMPACT_NAME, ResultsStore, read_summaries

pytestmark = pytest.mark.usefixtures("one_thread")
N = 8


def _eval(data: Path, out: Path) -> None:
    suite = out.parent / f"{out.name}-mini.toml"   # one resize option
    suite.write_text('name = "mini"\nfamily = "resize"\n[[conditions]]\nname = "pil-nearest"\nresize = "pil-nearest"\n')
    robustbench_sys.evaluate("mobilenet_v2", ["clean", str(suite)], data, out, limit=N, batch_size=2,
                             workers=0, progress=False, speed=False)


def _files(root: Path, unit: str) -> list[str]:
    return sorted(p.name for p in (root / "per_image" / unit).iterdir())


@pytest.fixture(scope="module")
def stores(tmp_path_factory, imagenet_sample):
    """(a store evaluated with compaction switched off: the parts as written, the same evaluation
    with compaction on)."""
    data = imagenet_sample
    parts, compacted = tmp_path_factory.mktemp("parts"), tmp_path_factory.mktemp("compacted")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ResultsStore, "compact_unit", lambda self, unit_id: None)
        _eval(data, parts)
    _eval(data, compacted)
    return parts, compacted


def _units(root: Path) -> list[str]:
    return sorted(d.name for d in (root / "per_image").iterdir())


def test_finished_units_hold_one_file_with_the_same_rows(stores, tmp_path):
    parts, compacted = stores
    units = _units(parts)
    assert len(units) == 2 and _units(compacted) == units
    assert all(len(_files(parts, u)) == N // 2 for u in units)          # 4 parts each, as written
    assert all(_files(compacted, u) == [COMPACT_NAME] for u in units)   # the hook compacted them
    key = ["unit_id", "file", "label", "pred", "top5", "top5_prob", "correct", "correct5", "status"]
    for u in units:   # the same predictions from the run that compacted (its run id and part names differ)
        a, b = (ResultsStore(r).read_unit_rows(u)[key].sort_values("file", ignore_index=True) for r in stores)
        pd.testing.assert_frame_equal(a, b)
    # compacting the written parts gives exactly the rows read before
    copy = tmp_path / "copy"
    shutil.copytree(parts, copy)
    store = ResultsStore(copy)
    for u in units:
        before = store.read_unit_rows(u)
        assert store.compact_unit(u) == copy / "per_image" / u / COMPACT_NAME
        assert _files(copy, u) == [COMPACT_NAME]
        pd.testing.assert_frame_equal(store.read_unit_rows(u), before)
        assert store.done_files(u) == set(before.file)
        assert store.compact_unit(u) == copy / "per_image" / u / COMPACT_NAME   # idempotent
    assert store.verify() == []
    pd.testing.assert_frame_equal(ResultsStore(copy).summaries(), ResultsStore(parts).summaries())


def test_crash_between_rename_and_part_deletion(stores, tmp_path, caplog):
    parts, _ = stores
    out = tmp_path / "crashed"
    shutil.copytree(parts, out)
    store = ResultsStore(out)
    unit = _units(out)[0]
    before = store.read_unit_rows(unit)
    # the compaction's rename happened, its deletions did not: the compacted file and every part
    written = sorted((out / "per_image" / unit).glob("part-*.parquet"))
    keep = {p: p.read_bytes() for p in written}
    store.compact_unit(unit)
    for p, data in keep.items():
        p.write_bytes(data)
    assert len(_files(out, unit)) == 1 + len(written)
    with caplog.at_level("WARNING", logger="robustbench_sys"):
        rows = store.read_unit_rows(unit)
    pd.testing.assert_frame_equal(rows, before)                     # each row once, no duplicate warning
    assert not [r for r in caplog.records if "duplicate" in r.getMessage()]
    assert store.done_files(unit) == set(before.file)
    assert len(store.scan(units=[unit])) == N
    summaries = store.summaries()
    assert set(summaries.n_images + summaries.n_errors) == {N}
    problems = store.verify()
    assert len(problems) == len(written) and all("interrupted compaction" in p for p in problems), problems
    assert len(store.verify(repair=True)) == len(written)
    assert store.verify() == [] and _files(out, unit) == [COMPACT_NAME]
    pd.testing.assert_frame_equal(store.read_unit_rows(unit), before)
    # a second compaction over a compacted file and a newer part (a resumed unit) keeps both
    extra = before.iloc[:2].assign(file=["extra/a.JPEG", "extra/b.JPEG"])
    store.append_batch(unit, extra)
    store.compact_unit(unit)
    assert _files(out, unit) == [COMPACT_NAME] and len(store.read_unit_rows(unit)) == N + 2


def test_projection_and_filter(stores):
    _, compacted = stores
    store = ResultsStore(compacted)
    unit = _units(compacted)[0]
    full = store.read_unit_rows(unit)
    got = store.read_unit_rows(unit, columns=["file", "pred"], filter=pc.field("correct") == True)  # noqa: E712
    expect = full[full.correct][["file", "pred"]].reset_index(drop=True)
    pd.testing.assert_frame_equal(got.reset_index(drop=True), expect)
    every = store.scan(columns=["unit_id", "file", "correct"])
    assert len(every) == 2 * N and list(every.columns) == ["unit_id", "file", "correct"]
    wrong = store.scan(columns=["unit_id", "file"], filter=pc.field("correct") == False)  # noqa: E712
    assert len(wrong) == int((~store.per_image().correct).sum())


def _summary(unit: str, cond: str, top1: float) -> dict:
    return {"unit_id": unit, "model": "m", "condition": cond, "family": cond.split("/")[0], "dataset": "d",
            "dataset_fingerprint": "fp", "n_images": 10, "n_errors": 0, "top1": top1, "run_id": "r"}


def test_summaries_table_and_newer_files(tmp_path, monkeypatch):
    monkeypatch.setattr(S, "INDEX_MIN_FILES", 3)
    store = ResultsStore(tmp_path)
    for i in range(5):
        store.write_summary(f"u{i}", _summary(f"u{i}", "resize/x", 0.5))
    df, problems = read_summaries(tmp_path)
    assert problems == [] and len(df) == 5 and (tmp_path / S.SUMMARY_INDEX).is_file()
    # a newer summary of one (unit, condition), a new one, a removed one: the table is stale
    store.write_summary("u1", _summary("u1", "resize/x", 0.9))
    store.write_summary("u9", _summary("u9", "resize/x", 0.1))
    store.summary_path("u3", "resize/x").unlink()
    (tmp_path / "summaries" / "u4.garbage.parquet").write_bytes(b"not parquet")
    cached, _, stale = S._read_index(tmp_path / S.SUMMARY_INDEX, S._summary_listing(tmp_path / "summaries"))
    assert stale and cached is not None and cached.num_rows == 3       # u1, u3 no longer match their files
    df, problems = read_summaries(tmp_path)
    assert len(problems) == 1 and "u4.garbage" in problems[0]
    assert df.set_index("unit_id").top1.to_dict() == {"u0": 0.5, "u1": 0.9, "u2": 0.5, "u4": 0.5, "u9": 0.1}
    plain, _ = read_summaries(tmp_path, index=False)
    pd.testing.assert_frame_equal(df, plain)
    _, _, stale = S._read_index(tmp_path / S.SUMMARY_INDEX, S._summary_listing(tmp_path / "summaries"))
    assert not stale                                                    # rebuilt by that read
    (tmp_path / S.SUMMARY_INDEX).write_bytes(b"damaged")                # a damaged table is only a cache
    pd.testing.assert_frame_equal(read_summaries(tmp_path)[0], plain)
