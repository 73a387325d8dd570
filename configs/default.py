"""Default configuration: byte-level LM on the embedded corpus, target task ``python``.

Launch (about 3 minutes on 2 CPU cores for the default 300 steps):

    python -m adaptive_data.main --config=configs/default.py --workdir=/tmp/ad_base

Arguments after ``:`` (comma-separated) pick a variant:

    --config=configs/default.py:method=mixing,target=jargon
    --config=configs/default.py:method=finetune,init_from=/tmp/ad_base
    --config=configs/default.py:runlocal          # a tiny model, seconds on a laptop
    --config=configs/default.py:model=rope_lm,extra_modules=examples.rope_lm  # your model
    --config=configs/default.py:sweep=anograd_grid   # for experiments/sweep.py

Any field can be overridden with dotted flags, e.g. ``--config.train.steps=1000``.
Methods: the names of ``adaptive_data.methods.METHODS`` (the README's method table); each
method's own settings are the config block its registry entry declares (``config.<name>``,
built here from ``MethodSpec.defaults``). A method of your own: ``extra_modules=my.module``
(several: ``extra_modules=a.b+c.d``) imports it before ``method`` is checked; a model of
your own is registered the same way and chosen with ``model=NAME``, which builds
``config.model`` from its entry (``adaptive_data.models.MODELS``); ``size`` picks the
default Transformer's preset. Target
tasks of the embedded corpus: python (the target domain is also in the pool at
``data.pool_target_share``), jargon (absent from the pool, related domains present),
russian (unlike anything in the pool).
"""

from __future__ import annotations

import ml_collections

from adaptive_data import config_args, methods, models

# The arguments after ``:`` of --config=configs/default.py:ARG, with their defaults
# (``sweep`` is read by sweep() only, for experiments/sweep.py).
# ``extra_modules`` is "+"-separated (the arguments themselves are comma-separated).
ARG_DEFAULTS = dict(
    method="base",
    model=models.DEFAULT,
    target="python",
    size="small",
    init_from="",
    runlocal=False,
    sweep="methods",
    extra_modules="",
)
SWEEPS = ("methods", "anograd_grid")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """Returns the config; ``arg`` is ``method=...,model=...,target=...,size=...,init_from=...,
    runlocal,extra_modules=a.b+c.d`` (and ``sweep=NAME`` for experiments/sweep.py)."""
    arg = config_args.parse_arg(arg, **ARG_DEFAULTS)
    extra_modules = tuple(m for m in arg.extra_modules.split("+") if m)
    methods.import_extra_modules(extra_modules)  # they register their methods and models
    if arg.method not in methods.METHODS:
        raise ValueError(
            f"Unknown method={arg.method!r}; choose one of {sorted(methods.METHODS)} "
            "(a method of your own: name its module with extra_modules=...)."
        )
    if arg.model not in models.MODELS:
        raise ValueError(
            f"Unknown model={arg.model!r}; choose one of {models.names()} (a model of your "
            "own: name its module with extra_modules=...)."
        )
    config = ml_collections.ConfigDict()
    # Training method: a name of adaptive_data.methods.METHODS.
    config.method = arg.method
    # Modules imported before the config is checked (each registers methods of its own,
    # adaptive_data.methods.register); saved with the config, so resumes, sweeps and
    # benchmarks import them again.
    config.extra_modules = extra_modules
    # Seed of parameter init, data order and dropout.
    config.seed = 0

    config.data = ml_collections.ConfigDict()
    # Generic pool: "embedded", "tfds:NAME[/CONFIG][:VERSION]" or "file:PATH.{txt,jsonl}".
    config.data.generic = "embedded"
    # Target sample: same spec syntax; "embedded" uses the target of `data.task`.
    config.data.target = "embedded"
    # Target task of the embedded corpus: python | jargon | russian.
    config.data.task = arg.target
    # Fraction of pool bytes from the target domain (None: the task's default).
    config.data.pool_target_share = ml_collections.config_dict.placeholder(float)
    # At most this many target documents in target_train.
    config.data.max_target_train = 1000
    # Text field of TFDS records and JSONL lines.
    config.data.text_key = "text"
    # TFDS data dir (None: TFDS_DATA_DIR or ~/tensorflow_datasets).
    config.data.tfds_data_dir = ml_collections.config_dict.placeholder(str)
    # TFDS split names used for the five roles when a spec is tfds:...
    config.data.generic_train_split = "train"
    config.data.generic_valid_split = "validation"
    config.data.target_train_split = "train"
    config.data.target_valid_split = "validation"
    config.data.target_test_split = "test"
    # For file: specs, the fraction of documents held out for each evaluation split.
    config.data.file_eval_fraction = 0.1
    # Fraction of generic_train set aside as a reserved shard (by a stable hash of each
    # document's position) for reference models that must never see the documents the
    # run they score for draws (rho's; 0: none).
    config.data.reserved_fraction = 0.0
    # The part of generic_train this run reads under a reserved shard: rest | reserved.
    config.data.generic_shard = "rest"
    # Domain name of the target (None: from the data, e.g. the embedded task).
    config.data.target_domain = ml_collections.config_dict.placeholder(str)
    # Grain reader threads per process.
    config.data.num_threads = 2
    # Tokenizer: "bytes" (the paper's), "sentencepiece:PATH.model" or "hf:PATH.json" (a
    # Hugging Face tokenizers file); its vocabulary sizes the LM and the weighting model.
    config.data.tokenizer = "bytes"

    # The LM: name (a registered model, adaptive_data.models.MODELS) and the entry's own
    # block (for the default transformer: size preset, sizes, dropout, activation dtype);
    # max_length is the number of tokens of every example.
    config.model = models.config_block(arg.model, arg)

    config.train = ml_collections.ConfigDict()
    # Number of model (inner) updates.
    config.train.steps = 40 if arg.runlocal else 300
    # Global batch size b of the model update (examples).
    config.train.batch_size = 8 if arg.runlocal else 32
    # Global batch size of target batches (mixing).
    config.train.target_batch_size = 8 if arg.runlocal else 32
    # AdamW peak learning rate, after linear warm-up.
    config.train.learning_rate = 1e-3
    # Linear warm-up steps, then cosine decay to `end_lr_fraction` * peak at `steps`.
    config.train.warmup_steps = 5 if arg.runlocal else 30
    config.train.end_lr_fraction = 0.1
    # AdamW decoupled weight decay, betas and global-norm gradient clipping (0: off).
    config.train.weight_decay = 0.01
    config.train.b1 = 0.9
    config.train.b2 = 0.99
    config.train.grad_clip = 1.0
    # Evaluate every this many steps (and at the last step).
    config.train.eval_every = 20 if arg.runlocal else 100
    # Write train metrics / progress every this many steps.
    config.train.log_every = 10

    config.eval = ml_collections.ConfigDict()
    # Evaluation batch size and number of documents of each evaluation split.
    config.eval.batch_size = 32 if arg.runlocal else 64
    config.eval.max_examples = 64 if arg.runlocal else 512

    config.select = ml_collections.ConfigDict()
    # k: the big generic batch has k * train.batch_size examples (selection methods).
    config.select.downsampling = 4 if arg.runlocal else 8
    # How b of B are drawn: top | sample | sample_with_replacement | positive |
    # positive_weighted (None: the method's default, see the README's method table).
    config.select.strategy = ml_collections.config_dict.placeholder(str)
    # Sampling temperature tau: probabilities softmax(scores / tau).
    config.select.temperature = 1.0
    # Uniform selection and no outer update before this step.
    config.select.warmup_steps = 5 if arg.runlocal else 20

    config.weighting = ml_collections.ConfigDict()
    # Token-CNN weighting model w(x; phi): embedding width, conv widths, kernel, activation.
    config.weighting.embed_dim = 32
    config.weighting.conv_features = (64, 64)
    config.weighting.kernel_size = 5
    config.weighting.activation = "relu"

    config.outer = ml_collections.ConfigDict()
    # Optimiser and learning rate of phi, the weighting model (adam | sgd).
    config.outer.optimizer = "adam"
    config.outer.learning_rate = 1e-3
    # Outer update every this many steps (after select.warmup_steps); the steps between
    # do not compute it (amortised selection: docs/algorithms.md, "Compute accounting").
    config.outer.every = 1
    # No outer update from this step on: phi is frozen and only scores (None: never stop).
    config.outer.stop_after = ml_collections.config_dict.placeholder(int)
    # The outer update sees a random fraction in (0, 1] of its generic and of its target
    # batch (None: all of both).
    config.outer.batch_fraction = ml_collections.config_dict.placeholder(float)

    # Each registered method's own block (adaptive_data/methods/registry.py): mixing,
    # finetune, align_filter, anograd, soba, dds, mixture (domain_mixture), dsir, cds, rho.
    for block, defaults in methods.registry.config_blocks(arg).items():
        config[block] = defaults

    config.diagnose = ml_collections.ConfigDict()
    # Checkpoint step of --mode=diagnose (None: the latest at or before 15% of
    # train.steps).
    config.diagnose.step = ml_collections.config_dict.placeholder(int)

    config.mesh = ml_collections.ConfigDict()
    # Devices per FSDP parameter shard group (1: parameters replicated, data parallel).
    config.mesh.fsdp = 1

    config.checkpoint = ml_collections.ConfigDict()
    # Save every this many steps (and at the end); keep the last `keep`.
    config.checkpoint.every = 20 if arg.runlocal else 100
    config.checkpoint.keep = 2
    # Also keep the best parameters by eval/target_valid_bpb in WORKDIR/best (finetune: always).
    config.checkpoint.keep_best = False
    return config


def sweep(add, arg: str | None = None):
    """The runs of ``experiments/sweep.py``: ``add(**overrides)`` per run (dotted keys).

    ``arg`` is get_config's, whose ``sweep=NAME`` picks the grid (every run also gets the
    rest of ``arg``, e.g. ``runlocal``, through get_config):

    - ``methods`` (default): every registered method that runs on its own
      (``methods.names(needs_other_runs=False)``; not finetune, cds, rho, which need
      other runs' workdirs) on every embedded target task (python, jargon, russian);
    - ``anograd_grid``: anograd on python, ``outer.learning_rate`` in (3e-4, 1e-3, 3e-3)
      x ``select.temperature`` in (0.5, 1.0, 2.0).
    """
    # The arguments of get_config (parsed the same way, so a typo fails here too).
    arg = config_args.parse_arg(arg, **ARG_DEFAULTS)
    if arg.sweep == "methods":
        for target in ("python", "jargon", "russian"):
            for method in methods.names(needs_other_runs=False):
                add(method=method, **{"data.task": target})
    elif arg.sweep == "anograd_grid":
        for learning_rate in (3e-4, 1e-3, 3e-3):
            for temperature in (0.5, 1.0, 2.0):
                add(
                    method="anograd",
                    **{
                        "data.task": "python",
                        "outer.learning_rate": learning_rate,
                        "select.temperature": temperature,
                    },
                )
    else:
        raise ValueError(f"Unknown sweep={arg.sweep!r}; choose one of {sorted(SWEEPS)}.")


def metrics(arg: str | None = None) -> list[str]:
    """Curves worth plotting for this config."""
    del arg
    return [
        "train/loss",
        "eval/generic_bpb",
        "eval/target_bpb",
        "eval/target_valid_bpb",
        "select/target_share",
        "select/pool_target_share",
    ]
