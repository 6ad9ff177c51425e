"""What ``fastair reproduce`` trains and evaluates: the settings (:class:`ReproduceConfig`), the
model families of the AIR paper's tables (:data:`FAMILIES`) and the list of runs
(:func:`plan_runs`).

A family is one row of a table: a preset, a fixed ``alpha`` and the regularization strength that
its grid varies (``sigma`` for the denoising models, ``H`` for WNI, none for the plain model).
Each run is one family at one k, one grid value and one seed.
"""
import dataclasses
from dataclasses import dataclass, field

from fastair.evaluation.iwsvi import resolve_precision
from fastair.evaluation.settings import IWSVISettings
from fastair.training import SCHEDULES, TrainConfig

__all__ = ["ReproduceConfig", "Family", "RunSpec", "FAMILIES", "PAPER_FAMILIES", "EVALUATOR",
           "family_label", "get_family", "plan_runs"]

EVALUATOR = IWSVISettings(precision="fp32", fit_precision="fp32")
"""IW-SVI as ``fastair reproduce`` runs it by default: the defaults of
:class:`fastair.evaluation.IWSVISettings` with the overrides stated here, and only here:
fp32 for the fit of ``q`` and the estimates (not ``"auto"``), so that a table's numbers do not
depend on the machine. :meth:`ReproduceConfig.evaluator` also averages the amortized bound over
``k_eval`` samples (``elbo_samples = k_eval``); :meth:`ReproduceConfig.quick_preset` lightens
``max_steps`` and ``k_eval``."""

_EVALUATOR_KEYS = ("k_svi", "max_steps", "lr", "k_eval", "chunk", "elbo_samples", "fit_precision",
                   "precision")
"""The settings a run's ``spec.json`` records (``evaluator``): part of its identity."""


@dataclass(frozen=True)
class Family:
    """A row of the paper's tables. ``preset``: the k = 1 preset (``vae``, ``dvae``,
    ``wni-vae``); ``knob``: ``"sigma"``, ``"H"`` or None; ``alpha``: the denoising weight;
    ``H_layers``: which encoder layers a WNI family caps (:data:`fastair.models.H_LAYERS`)."""
    key: str
    preset: str
    knob: str = None
    alpha: float = 1.0
    H_layers: str = "all"


FAMILIES = (Family("vae", "vae"),
            Family("dvae-a0.5", "dvae", "sigma", 0.5),
            Family("dvae-a1", "dvae", "sigma", 1.0),
            Family("wni", "wni-vae", "H"),
            Family("wni-hidden", "wni-vae", "H", H_layers="hidden"))
"""Table 1 (k = 1): VAE, DVAE with alpha 0.5 and 1, WNI-VAE; at k > 1 the same four rows are
IWAE, DIWAE (alpha 0.5, 1) and WNI-IWAE (Tables 2 and 3). ``wni-hidden`` is not the paper's:
WNI with the cap on the hidden layers only (the ``mu``/``logvar`` heads free)."""

PAPER_FAMILIES = ("vae", "dvae-a0.5", "dvae-a1", "wni")
"""The families of the paper's tables: what ``fastair reproduce`` runs by default."""

_NAMES = {"vae": ("VAE", "IWAE"), "dvae-a0.5": ("DVAE (α=0.5)", "DIWAE (α=0.5)"),
          "dvae-a1": ("DVAE (α=1)", "DIWAE (α=1)"), "wni": ("WNI-VAE", "WNI-IWAE"),
          "wni-hidden": ("WNI-VAE (hidden layers)", "WNI-IWAE (hidden layers)")}


def family_label(key, k):
    """The paper's name of a family at ``k``, e.g. ``family_label("wni", 8) == "WNI-IWAE"``."""
    return _NAMES[key][0 if k == 1 else 1]


@dataclass(frozen=True)
class RunSpec:
    """One training run: ``family`` key, ``k``, the grid value ``strength`` (None for the plain
    model) and the ``seed``."""
    family: str
    k: int
    strength: float
    seed: int

    @property
    def name(self):
        """Its directory under the output root, e.g. ``k1/dvae-a0.5/sigma0.4/seed0``."""
        fam = get_family(self.family)
        parts = [f"k{self.k}", self.family]
        if fam.knob is not None:
            parts.append(f"{fam.knob}{self.strength:g}")
        return "/".join(parts + [f"seed{self.seed}"])

    def model_kwargs(self):
        """Keyword arguments of :class:`fastair.models.VAE` for this run."""
        fam = get_family(self.family)
        kwargs = {"k": self.k}
        if fam.knob == "sigma":
            kwargs.update(sigma=float(self.strength), alpha=fam.alpha)
        elif fam.knob == "H":
            kwargs["H"] = float(self.strength)
            if fam.H_layers != "all":  # absent for the paper's WNI, as in runs made before
                kwargs["H_layers"] = fam.H_layers
        return kwargs


def get_family(key):
    """The :class:`Family` with ``key`` (ValueError naming the known keys otherwise)."""
    for fam in FAMILIES:
        if fam.key == key:
            return fam
    raise ValueError(f"family: unknown {key!r}; expected one of {[f.key for f in FAMILIES]}")


@dataclass
class ReproduceConfig:
    """Settings of ``fastair reproduce`` (docs/design.md §5.3). The defaults are the full protocol.

    Attributes:
        dataset, data_root: what :func:`fastair.data.load_dataset` loads.
        ks: the k of each table (1: Table 1; 8, 64: Tables 2 and 3).
        seeds: how many seeds per grid value (seeds ``0 .. seeds - 1``).
        sigmas: the grid of the denoising models' input-noise std. Binary pixels are 0 or 1, so
            0.1 barely moves an input and 0.8 hides most of a digit's strokes.
        Hs: the grid of WNI's cap on the encoder's row norms. A VAE trained on mnist5k ends with
            first-layer rows of norm 1.3-2.4 and later rows of 0.3-1.2, so H = 0.5 caps every
            layer hard and H = 4 caps almost nothing (the plain VAE's end of the curve).
        families: keys of :data:`FAMILIES` to run (default :data:`PAPER_FAMILIES`).
        epochs, patience: the early-stopping budget of each run (patience on the validation
            bound, as in :class:`fastair.training.TrainConfig`).
        schedule: the learning-rate schedule from Adam's 1e-3
            (:data:`fastair.training.SCHEDULES`): ``"constant"``, or ``"iwae"``, the IWAE
            paper's stages (1, 3, 9, ... epochs, each at a tenth of a decade less). On the full
            MNIST a constant 1e-3 plateaus early, nats short of the schedule; on mnist5k
            early stopping binds first.
        k_svi, max_steps, svi_lr, k_eval, chunk: the IW-SVI evaluator's settings
            (:func:`fastair.evaluation.iwsvi_log_likelihood`; ``svi_lr`` is its ``lr``; the
            defaults are :data:`EVALUATOR`'s), used on validation (to choose the grid value)
            and test; the amortized bound ``-L(x)`` is averaged over ``k_eval`` samples too.
        valid_n: choose the grid value on the first ``valid_n`` validation examples (in file
            order) instead of all of them (None: all); for the full MNIST, where each of the
            10000 costs IW-SVI.
        test_chosen_only: IW-SVI on test only for the runs of each family's chosen grid value,
            once every run is trained and validated (the table's rows; the other grid points
            get no test numbers).
        device, num_threads: where to run.
        precision: the training precision (:data:`fastair.precision.PRECISIONS`).
        eval_precision: the IW-SVI evaluator's precision, its fit of ``q`` and its estimates:
            ``"fp32"`` (the default, so a table's numbers do not depend on the machine),
            ``"bf16"``, or ``"auto"`` (bf16 where the device multiplies bf16 natively, else
            fp32; resolved when the run starts and recorded resolved in its spec).
        stack: train the runs of each k and seed together as one stacked model
            (:func:`fastair.reproduce.runner.run_stack`; the same files and results as one at
            a time, which ``False`` does), for k up to
            :data:`fastair.reproduce.STACK_MAX_K` (above it stacking does not pay). Not part
            of a run's identity: a grid may switch.
    """
    dataset: str = "mnist5k"
    data_root: str = None
    ks: tuple = (1,)
    seeds: int = 3
    sigmas: tuple = (0.1, 0.2, 0.4, 0.8)
    Hs: tuple = (0.5, 1.0, 2.0, 4.0)
    families: tuple = PAPER_FAMILIES
    epochs: int = 1000
    patience: int = 30
    schedule: str = "constant"
    k_svi: int = EVALUATOR.k_svi
    max_steps: int = EVALUATOR.max_steps
    svi_lr: float = EVALUATOR.lr
    k_eval: int = EVALUATOR.k_eval
    chunk: int = EVALUATOR.chunk
    valid_n: int = None
    test_chosen_only: bool = False
    device: str = "cpu"
    num_threads: int = None
    precision: str = "fp32"
    eval_precision: str = EVALUATOR.precision
    stack: bool = True
    quick: bool = False
    train: dict = field(default_factory=dict)

    def __post_init__(self):
        self.ks = tuple(int(k) for k in self.ks)
        self.sigmas, self.Hs = tuple(map(float, self.sigmas)), tuple(map(float, self.Hs))
        self.families = tuple(self.families)
        for fam in self.families:
            get_family(fam)
        checks = {"ks": all(k >= 1 for k in self.ks) and len(self.ks) > 0,
                  "seeds": isinstance(self.seeds, int) and self.seeds >= 1,
                  "sigmas": all(s > 0 for s in self.sigmas) and len(self.sigmas) > 0,
                  "Hs": all(h > 0 for h in self.Hs) and len(self.Hs) > 0,
                  "k_eval": self.k_eval >= 1, "k_svi": self.k_svi >= 1,
                  "max_steps": self.max_steps >= 0,
                  "chunk": self.chunk >= 1,
                  "schedule": self.schedule in SCHEDULES,
                  "eval_precision": self.eval_precision in ("fp32", "bf16", "auto"),
                  "valid_n": self.valid_n is None or (isinstance(self.valid_n, int)
                                                      and self.valid_n >= 1)}
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"reproduce: invalid {', '.join(bad)}: "
                             + ", ".join(f"{n}={getattr(self, n)!r}" for n in bad))

    @classmethod
    def quick_preset(cls, **overrides):
        """A few minutes on a CPU: one seed, two grid values each, 60 epochs at most, a
        lighter evaluator. Shows the pipeline and the shape of the result, not the paper's
        numbers (the models stop before they overfit much)."""
        settings = dict(seeds=1, sigmas=(0.2, 0.4), Hs=(1.0, 2.0), epochs=60, patience=10,
                        max_steps=300, k_eval=500, quick=True)
        settings.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**settings)

    def train_config(self, seed):
        """The :class:`TrainConfig` of a run with ``seed``."""
        return TrainConfig(epochs=self.epochs, patience=self.patience, seed=seed,
                           schedule=self.schedule,
                           device=self.device, num_threads=self.num_threads, progress=False,
                           precision=self.precision, **self.train)

    def iwsvi_settings(self):
        """The :class:`fastair.evaluation.IWSVISettings` of the runs' evaluations:
        :data:`EVALUATOR` with this config's values. The fit of ``q`` and the estimates run in
        ``eval_precision`` (fp32 by default whatever the CPU, so a table's numbers do not depend
        on the machine; ``"auto"`` resolved for ``device``)."""
        precision = resolve_precision(self.eval_precision, self.device)
        return EVALUATOR.replace(k_svi=self.k_svi, max_steps=self.max_steps, lr=self.svi_lr,
                                 k_eval=self.k_eval, chunk=self.chunk, elbo_samples=self.k_eval,
                                 fit_precision=precision, precision=precision)

    def evaluator(self):
        """Keyword arguments of :func:`fastair.evaluation.iwsvi_log_likelihood`: those of
        :meth:`iwsvi_settings` that a run's ``spec.json`` records (the others keep their
        defaults)."""
        settings = self.iwsvi_settings()
        return {name: getattr(settings, name) for name in _EVALUATOR_KEYS}

    def to_dict(self):
        return dataclasses.asdict(self)


def plan_runs(config):
    """Every :class:`RunSpec` of ``config``, in the order they run: by k, then seed, then
    family and grid value (so an early stop still leaves every family with a first seed)."""
    runs = []
    for k in config.ks:
        for seed in range(config.seeds):
            for key in config.families:
                fam = get_family(key)
                grid = {"sigma": config.sigmas, "H": config.Hs}.get(fam.knob, (None,))
                runs.extend(RunSpec(key, k, value, seed) for value in grid)
    return runs
