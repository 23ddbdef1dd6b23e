"""Uniform base of the adversarial attacks: the model wrapper and :class:`Attack`.

Every attack sees the same function the evaluator scores: a :class:`NormalizedModel`
that takes images in [0, 1] and applies the model's own normalisation inside, with the
mean / std passed explicitly (no hidden state), frozen in eval mode.

An :class:`Attack` is called as::

    result = attack(model, images, labels, eps=8/255, seed=0, **params)
    result.adv      # (N, C, H, W) float in [0, 1], same device / dtype as images
    result.params   # the parameters actually used (defaults filled in), for recording

and runs torchattacks under a scoped RNG (``torch.random.fork_rng``): the global
generator is reseeded with ``seed`` inside and restored afterwards, so a call neither
depends on nor changes the caller's random state.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
import torch.nn as nn

#: relative tolerance of the eps check: torchattacks clamps in float32, so a perturbation
#: may exceed eps by a few ulps; more than this is an error of the attack
EPS_RTOL = 1e-5
EPS_ATOL = 1e-6


class NormalizedModel(nn.Module):
    """``model((x - mean) / std)`` for images ``x`` in [0, 1], always in eval mode.

    Arguments:
        model (nn.Module): the classifier, taking normalised inputs.
        mean (sequence of float): per-channel mean the model was trained with.
        std (sequence of float): per-channel std the model was trained with.

    Shape:
        - input: :math:`(N, C, H, W)` in [0, 1], ``C == len(mean)``.
        - output: :math:`(N, K)` logits.

    Examples::
        >>> wrapped = NormalizedModel(model, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
        >>> logits = wrapped(images01)

    Why not torchattacks' ``set_normalization_used``: in torchattacks 3.5.1 an attack with
    it set takes and returns *normalised* images (``__call__`` inverse-normalises inside),
    so feeding [0, 1] images silently attacks other images than the ones scored.  Here the
    model owns its normalisation and every attack and the evaluator see [0, 1] images.

    ``train(True)`` raises: attacks and the evaluator must see the same deterministic
    function (dropout / batch-norm statistics frozen)."""

    model: nn.Module
    mean: torch.Tensor  # buffers registered in __init__
    std: torch.Tensor

    def __init__(self, model: nn.Module, mean, std):
        super().__init__()
        mean = torch.as_tensor(mean, dtype=torch.float32).flatten()
        std = torch.as_tensor(std, dtype=torch.float32).flatten()
        if mean.numel() != std.numel() or mean.numel() == 0:
            raise ValueError(f"NormalizedModel: mean {mean.tolist()} and std {std.tolist()} "
                             "must have one value per channel")
        if (std <= 0).any():
            raise ValueError(f"NormalizedModel: std must be positive, got {std.tolist()}")
        self.model = model
        try:
            dev = next(model.parameters()).device
        except StopIteration:
            dev = torch.device("cpu")
        # buffers, so .to(device) moves them; their values are the constructor's arguments
        self.register_buffer("mean", mean.view(1, -1, 1, 1).to(dev), persistent=False)
        self.register_buffer("std", std.view(1, -1, 1, 1).to(dev), persistent=False)
        super().train(False)
        model.eval()

    def train(self, mode: bool = True):
        if mode:
            raise RuntimeError("NormalizedModel is evaluation-only: attacks must see the scored function; "
                               "wrap a separate copy for training")
        return super().train(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] != self.mean.shape[1]:
            raise ValueError(f"NormalizedModel: input has {x.shape[1]} channels, mean/std have {self.mean.shape[1]}")
        return self.model((x - self.mean) / self.std)

    def extra_repr(self) -> str:
        return f"mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}"


class AttackResult(NamedTuple):
    """What an attack returns: adversarial images in [0, 1] and the parameters it used."""

    adv: torch.Tensor
    params: dict


def _versions() -> dict:
    out: dict[str, str | None] = {"torch": torch.__version__}
    try:
        import torchattacks

        out["torchattacks"] = torchattacks.__version__
    except ImportError:
        out["torchattacks"] = None
    return out


def _available() -> str | None:
    try:
        import torchattacks  # noqa: F401  (imports scipy.stats at import time)
    except ImportError as e:
        return (f"torchattacks is not importable ({e}); "
                "pip install 'robustbench-sys[adversarial]' && pip install --no-deps torchattacks==3.5.1")
    return None


def perturbation_norm(clean: torch.Tensor, adv: torch.Tensor, norm: str) -> torch.Tensor:
    """Per-image ``||adv - clean||_p`` for norm ``"Linf"``, ``"L2"`` or ``"L1"``, shape (N,)."""
    d = (adv.detach() - clean.detach()).flatten(1).double()
    if norm == "Linf":
        return d.abs().amax(1)
    if norm == "L2":
        return d.norm(p=2, dim=1)
    if norm == "L1":
        return d.abs().sum(1)
    raise ValueError(f"unknown norm {norm!r}; valid choices: Linf, L2, L1")


class Attack:
    """Base of every registered attack (one subclass per file).

    Subclasses set:
        name (str): registry name, ``adversarial/<name>``.
        norm (str): threat-model norm, ``"Linf"`` or ``"L2"``.
        threat (str): ``"white-box"`` (gradients) or ``"black-box"`` (scores only).
        bounded (bool): True when the attack takes ``eps`` as its budget; False for
            minimum-norm attacks (CW, DeepFool), where ``eps`` is optional and, when
            given, adversarial images farther than ``eps`` are replaced by the clean image
            (the attack counts as failed for them at that budget).
        defaults (dict): published hyper-parameters (every accepted parameter but eps).
        reference (str): where the defaults come from.
        test_params (dict): fast parameters for the test suite only (read by tests, never by
            the tools).

    and implement ``build(model, eps, params, n_classes) -> torchattacks.Attack`` (``n_classes``
    is 0 unless ``needs_n_classes``).
    """

    name: str = ""
    norm: str = "Linf"
    threat: str = "white-box"
    bounded: bool = True
    defaults: dict = {}
    reference: str = ""
    #: small budget for the test suite only (eps included for bounded attacks; MNIST-scale, a few
    #: seconds on 2 cores); every registered attack sets it.  Never used by the tools.
    test_params: dict | None = None
    #: build() gets the model's number of classes (costs one forward pass of one image)
    needs_n_classes: bool = False

    # ------------------------------------------------------------------ subclass API
    def build(self, model: nn.Module, eps: float | None, params: dict, n_classes: int):
        raise NotImplementedError

    def check_params(self, params: dict) -> None:
        """Hook for value checks of the merged parameters (raise ValueError)."""

    # ------------------------------------------------------------------ uniform call
    def resolve(self, eps: float | None, params: dict) -> dict:
        unknown = sorted(set(params) - set(self.defaults))
        if unknown:
            raise ValueError(f"attack {self.name!r}: unknown parameter(s) {', '.join(unknown)}; "
                             f"valid: eps, seed, {', '.join(sorted(self.defaults)) or '(none)'}")
        if self.bounded and eps is None:
            raise ValueError(f"attack {self.name!r} needs eps (its {self.norm} budget), e.g. eps=8/255")
        if eps is not None and not (float(eps) > 0):
            raise ValueError(f"attack {self.name!r}: eps must be > 0, got {eps!r}")
        merged = {**self.defaults, **params}
        self.check_params(merged)
        return merged

    def __call__(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *,
                 eps: float | None = None, seed: int = 0, **params: Any) -> AttackResult:
        p = self.resolve(eps, params)
        _check_batch(self.name, model, images, labels)
        eps = None if eps is None else float(eps)
        n_classes = 0
        if self.needs_n_classes:
            with torch.no_grad():
                n_classes = int(model(images[:1]).shape[1])
        devices = [images.device.index or 0] if images.is_cuda else []
        # gradients w.r.t. the weights are never needed: switch them off for the call (faster,
        # and torchattacks' DeepFool would otherwise accumulate .grad into the weights)
        frozen = [q for q in model.parameters() if q.requires_grad]
        try:
            for q in frozen:
                q.requires_grad_(False)
            with torch.random.fork_rng(devices=devices), torch.enable_grad():
                torch.manual_seed(seed)
                atk = self.build(model, eps, p, n_classes)
                adv = atk(images, labels).detach()
        finally:
            for q in frozen:
                q.requires_grad_(True)
        used = {"attack": self.name, "norm": self.norm, "threat": self.threat, "eps": eps, "seed": int(seed),
                **p, "torchattacks_class": type(atk).__name__}
        dist = perturbation_norm(images, adv, self.norm)
        if eps is not None:
            over = dist > eps * (1 + EPS_RTOL) + EPS_ATOL
            if self.bounded and over.any():
                raise RuntimeError(f"attack {self.name!r} returned a perturbation of {self.norm} norm "
                                   f"{dist.max().item():.6g} > eps {eps:.6g}: the attack is broken")
            if not self.bounded:
                adv = torch.where(over.view(-1, *[1] * (adv.dim() - 1)), images, adv)
                used["n_rejected_over_eps"] = int(over.sum())
                dist = torch.where(over, torch.zeros_like(dist), dist)
        used["max_perturbation"] = float(dist.max()) if dist.numel() else 0.0
        return AttackResult(adv, used)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, norm={self.norm!r}, defaults={self.defaults})"


def _check_batch(name: str, model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> None:
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or not images.is_floating_point():
        raise ValueError(f"attack {name!r}: images must be a float (N, C, H, W) tensor in [0, 1], "
                         f"got {getattr(images, 'shape', type(images))}")
    if images.numel() and (images.min() < 0 or images.max() > 1):
        raise ValueError(f"attack {name!r}: images must lie in [0, 1] (got {images.min().item():.4g}.."
                         f"{images.max().item():.4g}); normalise inside the model with NormalizedModel")
    if not isinstance(labels, torch.Tensor) or labels.shape != (images.shape[0],):
        raise ValueError(f"attack {name!r}: labels must be an int tensor of shape ({images.shape[0]},)")
    if model.training:
        raise ValueError(f"attack {name!r}: the model is in training mode; wrap it with "
                         f"NormalizedModel(model, mean, std) (eval-only) so attacks see the scored function")


def rel_step(name: str, params: dict) -> None:
    """Shared check of iterative attacks' ``steps`` / ``rel_stepsize``."""
    if int(params["steps"]) < 1:
        raise ValueError(f"attack {name!r}: steps must be >= 1, got {params['steps']!r}")
    if not (float(params["rel_stepsize"]) > 0):
        raise ValueError(f"attack {name!r}: rel_stepsize must be > 0, got {params['rel_stepsize']!r}")


class StepAttack(Attack):
    """Base of the iterative gradient attacks stepping ``alpha = rel_stepsize * eps`` for ``steps``
    iterations (PGD-L∞, PGD-L2, MIM): one subclass per file, as the others.

    Subclasses set, besides :class:`Attack`'s attributes:
        torchattacks_name (str): the torchattacks class built, e.g. ``"PGD"``.

    and may override ``extra_args(params) -> dict``: its keyword arguments besides
    ``eps`` / ``alpha`` / ``steps`` (e.g. ``random_start``).  ``check_params`` checks
    ``steps`` / ``rel_stepsize`` (:func:`rel_step`); ``build`` records the absolute step
    ``alpha`` in the parameters used.
    """

    torchattacks_name: str = ""

    def extra_args(self, params: dict) -> dict:
        return {}

    def check_params(self, params):
        rel_step(self.name, params)

    def build(self, model, eps, params, n_classes):
        import torchattacks

        params["alpha"] = params["rel_stepsize"] * eps
        cls = getattr(torchattacks, self.torchattacks_name)
        return cls(model, eps=eps, alpha=params["alpha"], steps=int(params["steps"]), **self.extra_args(params))


def register_attack(cls: type[Attack]) -> type[Attack]:
    """Class decorator: register one instance of ``cls`` as ``adversarial/<cls.name>``."""
    from robustbench_sys.noises.registry import register

    inst = cls()
    register("adversarial", cls.name,
             description=(cls.__doc__ or "").strip().split("\n")[0],
             params={"norm": cls.norm, "threat": cls.threat, "bounded": cls.bounded, **cls.defaults},
             available=_available, versions=_versions)(inst)
    return cls
