"""The typed entry point: :func:`evaluate`."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Union

import pandas as pd

from robustbench_sys import released, zoo
from robustbench_sys.alloc import tune_allocator
from robustbench_sys.data import Dataset, load_dataset, with_in_distribution
from robustbench_sys.devices import check_onnx_device, resolve_device
from robustbench_sys.errors import UserError
from robustbench_sys.eval.attack import write_worst_case
from robustbench_sys.eval.deploy import Calibration
from robustbench_sys.eval.plan import check_benchmark, check_preprocessed, plan_units
from robustbench_sys.eval.runner import Runner, run_models
from robustbench_sys.paths import default_results_dir
from robustbench_sys.suites import Suite, get_suite, resolve
from robustbench_sys.threads import apply_main
from robustbench_sys.zoo.resolve import resolve_model

if TYPE_CHECKING:
    import torch

log = logging.getLogger("robustbench_sys.eval")

#: a zoo name or ``.toml`` card, a name (``timm:NAME[.TAG]``, ``torchvision:NAME[.WEIGHTS]``,
#: ``path/to/model.onnx``, ``python:pkg.module:factory``), a card object, or an ``nn.Module``
Model = Union[str, os.PathLike, zoo.ModelCard, "torch.nn.Module"]
#: the image half of a pipeline for a model that does not carry it: a zoo card (object, name or
#: ``.toml`` path), a :class:`zoo.Preprocess` or reference :class:`~robustbench_sys.pipeline.Pipeline`,
#: or a timm data config dict (``timm.data.resolve_data_config({}, model=m)``)
PreprocessSpec = str | os.PathLike | zoo.ModelCard | zoo.Preprocess | dict
Data = str | os.PathLike | Dataset


def evaluate(models: Model | Sequence[Model] | None = None,
             suites: str | Suite | Sequence[str | Suite] = ("clean",),
             data: Data = "foolbox-demo", out: str | os.PathLike | None = None, *, model: Model | None = None,
             preprocess: PreprocessSpec | None = None, checkpoint: str | os.PathLike | None = None,
             name: str | None = None, limit: int | None = None,
             batch_size: int = 32, workers: int | None = None, progress: bool = True,
             calibration: Data = "foolbox-demo", scheduler: Any = None, device: str | None = None,
             speed: bool = True, plan: bool = False, data_format: str | None = None,
             clean_data: Data | None = None, released_input: str | None = None,
             ood_in: Data | None = None) -> pd.DataFrame:
    """Evaluate models against noise suites; results are appended to the parquet store at ``out``.

        >>> evaluate("mobilenet_v2", ["clean", "resize"], "foolbox-demo")          # doctest: +SKIP
        >>> evaluate(model=my_module, preprocess="mobilenet_v2", name="mine")      # doctest: +SKIP
        >>> evaluate("timm:tf_efficientnet_lite0", checkpoint="lite0.safetensors")  # doctest: +SKIP

    Args:
        models: one model or a list (positional); each a :data:`Model`: a zoo card name
            (``robustbench-sys zoo list``), a ``.toml`` card path, a :class:`zoo.ModelCard`,
            ``timm:NAME[.TAG]`` (preprocessing from timm's pretrained_cfg of the tag),
            ``torchvision:NAME[.WEIGHTS]`` (preprocessing of the weights' transforms),
            ``path/to/model.onnx`` (run by ONNX Runtime on the CPU as deployed; model-side noises
            are skipped), ``python:pkg.module:factory`` (imports your module and calls
            ``factory()``), or an ``nn.Module``.
        model: the same, as a keyword (one model; give ``models`` or ``model``, not both).
        preprocess: the preprocessing of a model that does not carry it (an nn.Module, an ``.onnx``
            file, a ``python:`` factory; required for them), see :data:`PreprocessSpec`; for a
            ``timm:`` / ``torchvision:`` name it replaces the resolved one.  Refused for a zoo card
            (edit its ``[preprocess]``).  With several models it goes to those that need one.
        checkpoint: a state dict file (``.safetensors`` or a ``torch.save`` file, possibly under
            ``state_dict`` / ``model``) for a ``timm:`` / ``torchvision:`` / ``python:`` name or an
            nn.Module (one model); it is checked to fit before anything runs, and its sha256 is
            the weights' identity.
        name: the model's name in the results (one model that is not a card); an nn.Module's
            default is its class name, a name's default the name itself.  Unit ids hash the
            name and the weights' sha256 (an nn.Module: of its state dict tensors).
        suites: suite names (``robustbench-sys suites list``), ``.toml`` suite paths or
            :class:`~robustbench_sys.suites.Suite` objects built in code; ``clean``
            (the model's own pipeline) is always included as the reference.
        data: an image folder (ImageNet wnid sub-folders, or a flat folder with ``labels.csv``),
            a :class:`Dataset`, or ``"foolbox-demo"``.
        out: results root (default ``$ROBUSTBENCH_SYS_RESULTS`` or ``~/.local/share/robustbench-sys/results``).
        limit: evaluate only the first ``limit`` images (sorted by file name).
        batch_size: images per forward pass (and per stored parquet part).
        workers: preprocessing processes (forked, in lockstep with the model); default one per core,
            at most 16; 0 = in this process.
        calibration: images for post-training quantisation (precision suite), disjoint from ``data``.
        device: where the models, normalisation and attacks compute: ``"cpu"``, ``"cuda"``,
            ``"cuda:N"`` or ``"auto"`` (a GPU when there is one; the choice is logged); default
            the device a suite pins (``device = "..."`` in its file), else ``"cpu"``.  A unit's id
            includes it unless it is ``cpu``; its spec and summary provenance record it (for a GPU:
            name, driver, CUDA / cuDNN versions, TF32 / cuDNN-benchmark flags).  See
            :mod:`robustbench_sys.devices` for what runs where.
        speed: time each deploy condition (precision / backend / device) and, when the run has
            one, the model's reference: batch-1 latency p50 / p95 over 50 runs and throughput, in
            the summary (:mod:`robustbench_sys.eval.speed`).  ``False`` (``--no-speed``) leaves
            those columns empty; accuracy rows are the same either way.
        scheduler: None runs every unit in this process; ``"local:N"`` starts a Dask
            LocalCluster of N worker processes on 127.0.0.1; ``"tcp://host:8786"`` (or a
            ``distributed.Client``) uses a running Dask cluster, whose workers must see ``out``
            and the data at the same paths (:mod:`robustbench_sys.eval.executors`);
            ``"jobqueue:PATH"`` builds a SLURM / PBS / SGE / LSF cluster from a config file.
        plan: run nothing and write nothing: return the plan (:mod:`robustbench_sys.eval.estimate`),
            one row per unit (status new / partial / summarise / finished, images left, shared
            prefixes, estimated seconds) or skip (with its reason); ``attrs["plan"]`` is the
            :class:`~robustbench_sys.eval.estimate.RunPlan` (``.render()`` prints it, with the
            wall-time estimate from a short calibration on this machine).

        data_format: ``imagenet-c``, ``imagenet-c-bar`` or ``imagenet-3dcc`` names ``data`` as the root
            of that released corruption set (``<corruption>/<severity>/<wnid>/*.JPEG``; recognised
            from its folder names without it): one unit per (model, corruption, severity), the
            crops evaluated as released, without a second resize (:mod:`robustbench_sys.released`).
        clean_data: with a released root, the clean validation images it was made from (the
            reference: clean error, ΔACC, relative mCE), or ``"none"`` (errors, CE, mCE only);
            required, no default.
        released_input: with a released root and a model whose input size differs from its crops:
            ``"resize"`` (to the input size, the model's resize method) or ``"pad"`` (centred on
            black); required then, recorded in each unit's pipeline.
            The released test sets of :data:`robustbench_sys.data.FORMATS` are named the same way
            (``imagenet-a``, ``imagenet-r``, ``imagenet-o``, ``imagenet-sketch``, ``imagenetv2``,
            ``imagenet-real``, or ``folder``; recognised from the folder where unambiguous).
            ImageNet-A / -R / -O restrict the logits to their 200 classes (attack suites are refused
            on them); ImageNet-ReaL adds ``real_top1`` / ``real_n`` to the summaries.
        ood_in: with ImageNet-O (required there, refused elsewhere): ImageNet validation images
            (wnid folders or labels.csv); those of its 200 classes are the negatives of the
            ``ood_aupr`` column (anomaly score = -max softmax probability over the 200 classes).

    Returns:
        One summary row per (model, condition) evaluated or found finished, as a DataFrame;
        ``attrs["skipped"]`` lists the conditions not run, each with its reason.

    Re-running the same call resumes: finished units are read back, interrupted ones continue.
    Diagnostics (skipped conditions and images) go to the ``robustbench_sys`` logger.
    """
    tune_allocator()
    apply_main()   # threads from the cores this process owns (robustbench_sys.threads; ROBUSTBENCH_SYS_THREADS)
    cards = _cards(models, model, preprocess=preprocess, checkpoint=checkpoint, name=name)
    suite_list = [suites] if isinstance(suites, (str, Suite)) else list(suites)
    rel = released.resolve(data, data_format)   # a released ImageNet-C / -C-bar / -3DCC root (robustbench_sys.released)
    if rel is not None:
        return released.evaluate_released(rel, cards, suite_list, clean_data=clean_data, released_input=released_input,
                                          limit=limit, out=out, batch_size=batch_size, workers=workers,
                                          progress=progress, calibration=calibration, scheduler=scheduler,
                                          device=_device(device, suite_list), plan=plan, weights=_weights)
    released.refuse_options(data, clean_data, released_input)
    full = data if isinstance(data, Dataset) else load_dataset(data, data_format=data_format)
    if ood_in is not None or (full.kind == "imagenet-o" and full.ood_negatives is None):
        full = with_in_distribution(full, ood_in)   # ImageNet-O + its in-distribution negatives
    dataset = full.limit(limit)
    if len(dataset) == 0:
        raise UserError(f"--data {data}: no images found")
    conditions = resolve(suite_list)
    attacks = [c.name for c in conditions if c.attack]
    if full.class_subset is not None and attacks:
        raise UserError(f"--data {data}: {full.kind} restricts the logits to {len(full.class_subset)} classes; "
                        f"attacks on it are not supported ({', '.join(attacks[:3])}); run attack suites on a "
                        "1000-class data set")
    device = _device(device, suite_list)
    if plan:
        return _plan(cards, full, dataset, data, conditions, device, out=out, batch_size=batch_size,
                     workers=workers, scheduler=scheduler, speed=speed)
    runner = Runner(out or default_results_dir(), batch_size=batch_size, workers=workers, progress=progress)
    for card in cards:
        check_benchmark(card, full)
        check_preprocessed(card, full, data)
    calib = Calibration(calibration, dataset, batch_size)
    plans = []
    for card in cards:
        _, sha = _weights(card)
        if card.library == "onnx":
            check_onnx_device(card.name, device)
        units, skips = plan_units(card, sha, conditions, dataset, device, speed=speed)
        for s in skips:
            runner.skip(s)
        plans.append(units)    # the reference first: every other summary pairs with it
    if scheduler is None:
        finished = run_models(runner, plans, calib)   # units of several models may share preprocessing
    else:
        from robustbench_sys.eval.executors import run_dask

        finished = run_dask(runner, plans, scheduler, calibration=calibration, batch_size=batch_size)
    summaries = []
    for units in finished:
        write_worst_case(runner.store, units)   # WCAR over each suite's attacks
        keys = {(u.id, u.condition.name) for u in units}
        s = runner.store.summaries()
        summaries.append(s[[k in keys for k in zip(s.unit_id, s.condition)]] if len(s) else s)
    out_df = pd.concat(summaries, ignore_index=True) if summaries else pd.DataFrame()
    out_df.attrs["skipped"] = runner.skipped
    out_df.attrs["out"] = str(runner.store.root)
    return out_df


def _plan(cards, full, dataset, data, conditions, device, *, out, batch_size, workers, scheduler,
          speed) -> pd.DataFrame:
    """The plan-only path of :func:`evaluate`: the same checks and units, nothing run or written."""
    from robustbench_sys.eval.estimate import build_plan
    from robustbench_sys.eval.loop import preprocess_workers

    plans, skips = [], []
    for card in cards:
        check_benchmark(card, full)
        check_preprocessed(card, full, data)
        _, sha = _weights(card)
        if card.library == "onnx":
            check_onnx_device(card.name, device)
        units, sk = plan_units(card, sha, conditions, dataset, device, speed=speed)
        plans.append(units)
        skips += sk
    rp = build_plan(out or default_results_dir(), plans, skips, dataset, batch_size=batch_size,
                    workers=preprocess_workers() if workers is None else workers, scheduler=scheduler)
    return rp.table()


def _weights(card: zoo.ModelCard) -> tuple:
    try:
        return zoo.fetch_weights(card)
    except zoo.WeightsUnavailable as e:
        hint = ("; or give --checkpoint PATH (checkpoint= in Python)"
                if not card.path and card.library in ("timm", "torchvision") else "")
        raise UserError(f"--model {card.name}: weights not available here: {e}{hint}") from None


def _device(device: str | None, suite_list: list) -> str:
    """The run's device: ``device`` when given, else the one the suites pin, else ``cpu``; a pin
    that disagrees with ``device`` (or with another suite's) is a :class:`UserError`."""
    pins = {s.name: s.device for s in (x if isinstance(x, Suite) else get_suite(str(x)) for x in suite_list)
            if getattr(s, "device", None)}
    if device is None and len(set(pins.values())) > 1:
        raise UserError("suites pin different devices (" + ", ".join(f"{k}: {v}" for k, v in pins.items())
                        + "); evaluate them in separate runs or give --device")
    chosen = resolve_device(device if device is not None else next(iter(pins.values()), None))
    for name, pin in pins.items():
        if resolve_device(pin, source=f"suite {name}: device") != chosen:
            raise UserError(f"suite {name} pins device {pin!r} but this run uses {chosen}; drop --device "
                            "or the suite's device line")
    if device is None and pins:   # the default (cpu) and --device are recorded in each unit, not logged
        log.info("device: %s (pinned by suite %s)", chosen, ", ".join(pins))
    return chosen


def _is_module(obj) -> bool:
    import sys

    torch = sys.modules.get("torch")   # an nn.Module exists only once torch is imported
    return torch is not None and isinstance(obj, torch.nn.Module)


def _cards(models, model, *, preprocess, checkpoint, name) -> list[zoo.ModelCard]:
    """The models of an :func:`evaluate` call as cards (one-line :class:`UserError` otherwise)."""
    if models is not None and model is not None:
        raise UserError("evaluate: give the models positionally or as model=, not both")
    given = model if model is not None else models
    if given is None:
        raise UserError("evaluate: give a model (a zoo name, a .toml card, timm:NAME, torchvision:NAME, "
                        "a .onnx file, python:pkg.module:factory or an nn.Module)")
    single = _is_module(given) or isinstance(given, (str, os.PathLike, zoo.ModelCard))
    items = [given] if single else list(given)
    if not items:
        raise UserError("evaluate: the list of models is empty")
    if len(items) > 1 and (checkpoint is not None or name is not None):
        raise UserError("--checkpoint / name= apply to one model; evaluate the models one call at a time")
    cards = []
    for m in items:
        pp = preprocess if len(items) == 1 or _needs_preprocess(m) else None
        try:
            cards.append(resolve_model(m, preprocess=pp, checkpoint=checkpoint, name=name))
        except zoo.UnknownModel as e:
            raise UserError(f"--model: {e}") from None
        except zoo.CardError as e:
            raise UserError(str(e)) from None
    return cards


def _needs_preprocess(m) -> bool:
    if _is_module(m):
        return True
    s = os.fspath(m) if isinstance(m, (str, os.PathLike)) else ""
    return s.endswith(".onnx") or s.startswith("python:")
