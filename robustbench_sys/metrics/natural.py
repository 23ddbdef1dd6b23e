"""ImageNet-C metrics: corruption error (CE), mean CE (mCE), relative CE and relative mCE.

Standalone (numpy / pandas only).  Definitions pinned here (Hendrycks & Dietterich,
"Benchmarking Neural Network Robustness to Common Corruptions and Perturbations", ICLR 2019,
section 3), with E_{s,c} the top-1 error rate (a fraction in [0, 1]) at severity s = 1..5 of
corruption c and E_clean the clean error:

    CE_c          = sum_s E_{s,c} / sum_s E^AlexNet_{s,c}
    mCE           = mean of CE_c over the 15 benchmark corruptions
    relative CE_c = (sum_s E_{s,c} - 5 E_clean) / (sum_s E^AlexNet_{s,c} - 5 E^AlexNet_clean)
    relative mCE  = mean of relative CE_c over the 15

(the paper writes relative CE with differences per severity, sum_s (E_{s,c} - E_clean),
which is the same number).  All are fractions (multiply by 100 for the paper's "%").
Errors are accepted as ``{corruption: {severity: error}}`` (or a sequence of five errors in
severity order per corruption) or as a pandas DataFrame with columns ``corruption``,
``severity``, ``error``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

#: AlexNet's top-1 error per corruption, averaged over the five severities (so the paper's
#: sum_s E^AlexNet_{s,c} is 5 x these).  Source: Hendrycks' ImageNet-C evaluation code
#: (github.com/hendrycks/robustness, ImageNet-C/test.py); unit-tested against the worked
#: examples in tests/test_natural_metrics.py.
ALEXNET_ERRORS: dict[str, float] = {
    "gaussian_noise": .886428, "shot_noise": .894468, "impulse_noise": .922640,
    "defocus_blur": .819880, "glass_blur": .826268, "motion_blur": .785948, "zoom_blur": .798360,
    "snow": .866816, "frost": .826572, "fog": .819324, "brightness": .564592,
    "contrast": .853204, "elastic_transform": .646056, "pixelate": .717840, "jpeg_compression": .606500,
}

#: AlexNet's clean top-1 error.  The paper (Table 1) reports 43.5%; the AlexNet it uses is
#: torchvision's pretrained model, whose documented top-1 accuracy is 56.522%, i.e. an error
#: of 0.43478 (torchvision model documentation, AlexNet_Weights.IMAGENET1K_V1).
ALEXNET_CLEAN_ERROR: float = 0.43478

#: The 15 corruptions mCE averages over, in the paper's order.
BENCHMARK_CORRUPTIONS: tuple[str, ...] = tuple(ALEXNET_ERRORS)
SEVERITIES = (1, 2, 3, 4, 5)


class MetricsError(ValueError):
    """Bad or incomplete error table (one-line message saying what is missing)."""


def _check_rate(v, what: str) -> float:
    v = float(v)
    if not 0.0 <= v <= 1.0:
        raise MetricsError(f"{what} = {v!r} is not an error rate in [0, 1] (pass fractions, not percentages)")
    return v


def _severity_errors(errors, corruption: str) -> list[float]:
    """The five errors of one corruption, in severity order."""
    if isinstance(errors, Mapping):
        missing = [s for s in SEVERITIES if s not in errors]
        if missing:
            raise MetricsError(f"{corruption}: errors for severities {missing} missing (need all of 1..5)")
        vals = [errors[s] for s in SEVERITIES]
    else:
        vals = list(errors)
        if len(vals) != 5:
            raise MetricsError(f"{corruption}: need 5 errors (severities 1..5), got {len(vals)}")
    return [_check_rate(v, f"{corruption} error") for v in vals]


def _alexnet(corruption: str) -> float:
    try:
        return ALEXNET_ERRORS[corruption]
    except KeyError:
        raise MetricsError(f"no AlexNet baseline for {corruption!r}; CE is defined for: "
                           f"{', '.join(BENCHMARK_CORRUPTIONS)}") from None


def mean_error(errors, corruption: str = "corruption") -> float:
    """Mean error over the five severities."""
    v = _severity_errors(errors, corruption)
    return sum(v) / 5


def corruption_error(errors, corruption: str) -> float:
    """CE_c = sum_s E_{s,c} / sum_s E^AlexNet_{s,c}."""
    return sum(_severity_errors(errors, corruption)) / (5 * _alexnet(corruption))


def relative_corruption_error(errors, clean_error: float, corruption: str) -> float:
    """Relative CE_c = (sum_s E_{s,c} - 5 E_clean) / (sum_s E^AlexNet_{s,c} - 5 E^AlexNet_clean)."""
    clean = _check_rate(clean_error, "clean error")
    return (sum(_severity_errors(errors, corruption)) - 5 * clean) / \
        (5 * _alexnet(corruption) - 5 * ALEXNET_CLEAN_ERROR)


def _as_nested(errors) -> dict:
    """{corruption: {severity: error}} from a nested mapping or a DataFrame."""
    if isinstance(errors, Mapping):
        return dict(errors)
    cols = getattr(errors, "columns", None)
    if cols is None or not {"corruption", "severity", "error"} <= set(cols):
        raise MetricsError("errors must be {corruption: {severity: error}} or a DataFrame with columns "
                           "corruption, severity, error")
    out: dict[str, dict[int, float]] = {}
    for c, s, e in zip(errors["corruption"], errors["severity"], errors["error"]):
        d = out.setdefault(str(c), {})
        if int(s) in d:
            raise MetricsError(f"{c}: severity {int(s)} appears twice")
        d[int(s)] = float(e)
    return out


def _need_all(nested: dict, corruptions: Sequence[str]) -> None:
    missing = [c for c in corruptions if c not in nested]
    if missing:
        raise MetricsError(f"mCE needs all {len(corruptions)} corruptions; missing: {', '.join(missing)}")


def mce(errors, corruptions: Sequence[str] = BENCHMARK_CORRUPTIONS) -> float:
    """mCE: mean of CE_c over ``corruptions`` (the 15 by default; all must be present)."""
    nested = _as_nested(errors)
    _need_all(nested, corruptions)
    return sum(corruption_error(nested[c], c) for c in corruptions) / len(corruptions)


def relative_mce(errors, clean_error: float, corruptions: Sequence[str] = BENCHMARK_CORRUPTIONS) -> float:
    """Relative mCE: mean of relative CE_c over ``corruptions``."""
    nested = _as_nested(errors)
    _need_all(nested, corruptions)
    return sum(relative_corruption_error(nested[c], clean_error, c) for c in corruptions) / len(corruptions)


def ce_table(errors, clean_error: float | None = None):
    """pandas DataFrame, one row per corruption with all five severities: ``corruption``,
    ``mean_error``, ``ce`` and (with ``clean_error``) ``relative_ce``; corruptions without an
    AlexNet baseline (the 4 extra ones) get NaN CE."""
    import pandas as pd

    rows = []
    for c, sev in _as_nested(errors).items():
        row = {"corruption": c, "mean_error": mean_error(sev, c), "ce": float("nan")}
        if c in ALEXNET_ERRORS:
            row["ce"] = corruption_error(sev, c)
            if clean_error is not None:
                row["relative_ce"] = relative_corruption_error(sev, clean_error, c)
        elif clean_error is not None:
            row["relative_ce"] = float("nan")
        rows.append(row)
    return pd.DataFrame(rows)
