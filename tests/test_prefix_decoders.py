"""Shared-prefix groups across decoders (robustbench_sys.eval.prefix): each image read once,
decoded once per decoder, and the stages after the decoder run once per distinct decoded array,
every input still exactly ``pipeline.preprocess(bytes)``."""

import time

import numpy as np
import pytest
from PIL import Image

from robustbench_sys import zoo
from robustbench_sys.data import Sample
from robustbench_sys.eval import prefix
from robustbench_sys.pipeline import Pipeline

pytestmark = pytest.mark.usefixtures("one_thread")

DECODERS = ("decoder/pil", "decoder/opencv", "decoder/pil-draft", "decoder/turbojpeg-fast", "decoder/ffmpeg")
RESIZES = ("resize/cv2-area", "resize/pil-bicubic")


def _pipelines() -> list[Pipeline]:
    ref = Pipeline.from_card(zoo.get_card("mobilenet_v2"))
    pipes = [ref.replace(decoder=d, resize=r) for d in DECODERS for r in RESIZES]
    pipes = [p for p in pipes if p.check_available() is None]
    if len({p.decoder for p in pipes}) < 3:
        pytest.skip("fewer than 3 decoders available here")
    return pipes


def _sample(path) -> Sample:
    return Sample(path=path, label=0, file=path.name)


def test_every_input_is_its_own_pipeline(sample_jpegs):
    """On real JPEGs, each yielded input equals ``p.preprocess(bytes)`` bit for bit; work is shared
    exactly between pipelines whose decoders give the image the same array and whose later stages
    are the same, and never otherwise."""
    pipes = _pipelines()
    after = prefix.after_decoder(pipes)
    which = list(range(len(pipes)))
    shared_any = computed_total = 0
    for path in sample_jpegs[:6]:
        data = path.read_bytes()
        decoded = {p.decoder: p.decode(data) for p in pipes}
        got = list(prefix.preprocess_shared(pipes, _sample(path), which, after))
        assert [k for k, *_ in got] == which
        for k, x, err, first in got:
            assert err == "" and np.array_equal(x, pipes[k].preprocess(data)), pipes[k].describe()
            same = np.array_equal(decoded[pipes[k].decoder], decoded[pipes[first].decoder])
            assert after[k] == after[first] and same
            if first != k:
                assert x is got[first][1]   # one array, not a recomputation
            # the first pipeline with an equal decoding and the same later stages is the one computed
            assert first == min(j for j in which if after[j] == after[k]
                                and np.array_equal(decoded[pipes[j].decoder], decoded[pipes[k].decoder]))
        shared_any += sum(first != k for k, *_, first in got)
        computed_total += sum(first == k for k, *_, first in got)
    # PIL, OpenCV and PIL draft mode all run libjpeg-turbo's default decode here: they agree
    if {"decoder/pil", "decoder/opencv"} <= {p.decoder for p in pipes}:
        assert shared_any > 0
    assert computed_total >= len(RESIZES) * 6


def test_decoders_that_disagree_are_never_shared(sample_jpegs, monkeypatch):
    """A decoder whose output differs by one pixel value is computed on its own."""
    from robustbench_sys import noises

    pipes = [p for p in _pipelines() if p.decoder in ("decoder/pil", "decoder/opencv")]
    if len({p.decoder for p in pipes}) < 2:
        pytest.skip("PIL and OpenCV decoders not both available")
    real = noises.get("decoder/opencv")

    def off_by_one(data):
        a = real(data).copy()
        a[0, 0, 0] ^= 1
        return a

    monkeypatch.setattr(Pipeline, "decode", lambda self, data: off_by_one(data) if self.decoder == "decoder/opencv"
                        else noises.get(self.decoder)(data))
    data = sample_jpegs[0].read_bytes()
    got = list(prefix.preprocess_shared(pipes, _sample(sample_jpegs[0]), list(range(len(pipes))),
                                        prefix.after_decoder(pipes)))
    assert all(first == k for k, *_, first in got)
    for k, x, _, _ in got:
        p = pipes[k]
        assert np.array_equal(x, p.to_input(p.decode(data), p.image_rng(data)))


def test_a_decoder_error_stays_with_its_units(sample_jpegs, tmp_path):
    """A PNG: decoders that read only JPEG fail for their units alone; the others are computed."""
    pipes = _pipelines()
    png = tmp_path / "image.png"
    Image.open(sample_jpegs[1]).convert("RGB").save(png)
    got = list(prefix.preprocess_shared(pipes, _sample(png), list(range(len(pipes))), prefix.after_decoder(pipes)))
    data = png.read_bytes()
    for k, x, err, _ in got:
        try:
            want = pipes[k].preprocess(data)
        except Exception:
            assert x is None and err, pipes[k].describe()
        else:
            assert err == "" and np.array_equal(x, want), pipes[k].describe()
    assert any(x is not None for _, x, _, _ in got)
    unreadable = list(prefix.preprocess_shared(pipes, _sample(tmp_path / "missing.jpg"), [0, 1]))
    assert [(k, x) for k, x, _, _ in unreadable] == [(0, None), (1, None)] and all(e for _, _, e, _ in unreadable)


@pytest.mark.parametrize("workers,overlap", [(0, False), (2, False), (2, True)])
def test_group_batches_across_decoders(sample_jpegs, workers, overlap):
    """The grouped batches of pipelines with several decoders (in this process, and in forked
    workers writing a shared buffer, aliases pointing at another class's slot; in lockstep or
    overlapped: the next shard written into a second buffer while this one is read) equal each
    pipeline's own per-image preprocessing, in the per-unit loop's batches."""
    pipes = _pipelines()
    samples = [_sample(p) for p in sample_jpegs[:7]]
    todos = [samples, samples[2:], *([samples] * (len(pipes) - 2))]
    seen: dict[int, list] = {k: [] for k in range(len(pipes))}
    for k, batch in prefix.group_batches(pipes, todos, 3, workers, samples, overlap=overlap):
        assert len(batch) == min(3, len(todos[k]) - len(seen[k]))
        if overlap:
            time.sleep(0.02)   # the workers write the next shard meanwhile: never into this batch
        for i, x, err in batch:
            seen[k].append(i)
            assert err == "" and np.array_equal(x, pipes[k].preprocess(todos[k][i].path.read_bytes()))
    assert all(seen[k] == list(range(len(todos[k]))) for k in seen)


def test_plan_groups_span_decoders_and_cut_at_the_buffer(tmp_path, imagenet_sample, monkeypatch):
    """One group for a model's decoder x resize units (the decoders together, each decoder's units
    next to each other), cut when the input buffer (a batch per image-side class) would pass
    ROBUSTBENCH_SYS_GROUP_BUFFER_MB."""
    from robustbench_sys.data import load_dataset
    from robustbench_sys.eval.plan import plan_units
    from robustbench_sys.eval.runner import Runner
    from robustbench_sys.suites import resolve

    monkeypatch.setenv("ROBUSTBENCH_SYS_SHARED_PREFIX", "1")
    card = zoo.get_card("mobilenet_v2")
    _, sha = zoo.fetch_weights(card)
    units = plan_units(card, sha, resolve(["imagenet-s"]), load_dataset(str(imagenet_sample)).limit(4))[0]
    units = [u for u in units if u.pipeline.check_available() is None]
    runner = Runner(tmp_path / "out", workers=0, batch_size=8, progress=False)
    (group,) = prefix.plan_groups(runner, units)
    assert len(group) == len({u.id for u in units}) and len({u.pipeline.decoder for u in group}) >= 3
    decs = [u.pipeline.decoder for u in group]
    assert decs == sorted(decs, key=decs.index)   # each decoder's units contiguous

    per = prefix.buffer_bytes(units[0].pipeline, 8)
    monkeypatch.setenv("ROBUSTBENCH_SYS_GROUP_BUFFER_MB", str(11.5 * per / 2**20))
    groups = prefix.plan_groups(runner, units)
    assert all(len({prefix.image_side(u.pipeline) for u in g}) <= 11 for g in groups)
    assert sum(len(g) for g in groups) == len(group) and len(groups) >= len(group) // 11
    monkeypatch.setenv("ROBUSTBENCH_SYS_OVERLAP", "1")   # two buffers in turn: half the classes
    groups = prefix.plan_groups(runner, units)
    assert all(len({prefix.image_side(u.pipeline) for u in g}) <= 5 for g in groups)
    assert sum(len(g) for g in groups) == len(group) and len(groups) >= len(group) // 5


def test_overlapped_groups_store_the_same_rows(tmp_path, imagenet_sample, monkeypatch):
    """A grouped run across two decoders with the GPU schedule forced on the CPU (the next shard
    preprocessed into a second buffer while this one is scored) stores the lockstep run's rows."""
    from robustbench_sys.eval.api import evaluate
    from robustbench_sys.results.store import ResultsStore

    suite = tmp_path / "two-decoders.toml"
    suite.write_text('name = "two-decoders"\nfamily = "imagenet-s"\nversion = 1\n'
                     '[product.decode]\npattern = "decoder/*"\n'
                     'exclude = ["decoder/ffmpeg", "decoder/nvjpeg", "decoder/pil-draft", "decoder/pillow-simd", '
                     '"decoder/pillow9", "decoder/turbojpeg-fast"]\n'
                     '[product.resize]\npattern = "resize/cv2-*"\n'
                     'exclude = ["resize/cv2-lanczos4", "resize/cv2-cubic"]\n')
    calls = []
    real = prefix.run_group
    monkeypatch.setattr(prefix, "run_group", lambda runner, group, *a, **kw: calls.append(len(group))
                        or real(runner, group, *a, **kw))
    rows = {}
    for schedule in ("0", "1"):
        monkeypatch.setenv("ROBUSTBENCH_SYS_OVERLAP", schedule)
        out = tmp_path / f"overlap-{schedule}"
        evaluate("mobilenet_v2", ["clean", str(suite)], imagenet_sample, out, limit=7, batch_size=2,
                 progress=False, workers=2, speed=False)
        rows[schedule] = ResultsStore(out).per_image().sort_values(["unit_id", "file"]).reset_index(drop=True)
    assert calls == [7, 7]   # clean + (pil, opencv) x 3 cv2 resizes, one group each run
    assert len(rows["0"]) == 7 * 7
    for col in ("unit_id", "file", "pred", "correct", "top5"):
        assert rows["0"][col].astype(str).tolist() == rows["1"][col].astype(str).tolist(), col
    assert np.array_equal(np.stack(rows["0"].top5_prob.to_numpy()), np.stack(rows["1"].top5_prob.to_numpy()))


@pytest.mark.parametrize("env,why", [("ROBUSTBENCH_SYS_GROUP_BUFFER_MB", "give a size in MiB (a positive number; "
                                                                       "unset: 2048)"),
                                     ("ROBUSTBENCH_SYS_GROUP_MEMORY_MB", "give a size in MiB (a positive number; "
                                                                       "unset: 4096)"),
                                     ("ROBUSTBENCH_SYS_SHARED_PREFIX", "give 1 (units share their image-side work) "
                                                                     "or 0 (every unit on its own)")])
def test_bad_group_setting_is_one_line(env, why, imagenet_sample, tmp_path, monkeypatch, capsys):
    from robustbench_sys.cli import main

    monkeypatch.setenv(env, "lots")
    rc = main(["eval", "--model", "mobilenet_v2", "--suite", "clean,decoder", "--data", str(imagenet_sample),
               "--limit", "2", "--no-progress", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    assert err.strip().splitlines()[-1] == f"robustbench-sys: error: {env}=lots: {why}"
