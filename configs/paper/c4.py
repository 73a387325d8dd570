"""The paper's setting: C4 as the generic pool, a byte LM of 12 layers x 256, batch 128.

Generic data is ``tfds:c4/en`` (prepare it once in array_record format; nothing is
downloaded at run time); the target is any data spec, e.g. your Reuters or Pile-domain
sample as JSONL. Method-specific big batches follow the paper (k * 128 examples, up to
8192). Launch lines (see the README for the multi-host details):

    # one multi-GPU node (all local GPUs, one process)
    python -m adaptive_data.main --workdir=/ckpt/anograd_reuters \
        --config=configs/paper/c4.py:method=anograd,target=file:/data/reuters.jsonl

    # TPU pod slice: the same command on every host, with --distributed
    gcloud compute tpus tpu-vm ssh $TPU --worker=all --command="cd adaptive_data && \
        python -m adaptive_data.main --distributed --workdir=gs://bucket/anograd_reuters \
        --config=configs/paper/c4.py:method=anograd,target=file:/data/reuters.jsonl"

``runlocal`` keeps the method settings but swaps in the embedded corpus, a tiny model
and a few steps (what the tests run).
"""

from __future__ import annotations

import pathlib

import ml_collections

from adaptive_data import config_args, methods

# Big batch factor k by what scores the big batch (``MethodSpec.scorer``; big batch =
# k * 128 examples): scoring with the LM itself costs a forward (and jvp) pass per example,
# so those methods read fewer candidates than the cheap scorers.
DOWNSAMPLING_BY_SCORER = {
    "none": 1,
    "lm_gradient": 16,
    "lm_forward": 16,
    "weighting_model": 64,
    "domain": 64,
    "ngram": 64,
}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """``method=...,target=<data spec>,generic=<data spec>,fsdp=N,runlocal,
    extra_modules=a.b+c.d``."""
    arg = config_args.parse_arg(
        arg,
        method="anograd",
        target="",
        generic="tfds:c4/en:3.1.0",
        fsdp=1,
        runlocal=False,
        extra_modules="",
    )
    config = config_args.load_config(
        pathlib.Path(__file__).resolve().parent.parent / "default.py",
        f"method={arg.method},size=paper,extra_modules={arg.extra_modules}"
        + (",runlocal" if arg.runlocal else ""),
    )
    downsampling = DOWNSAMPLING_BY_SCORER[methods.METHODS[arg.method].scorer]
    if arg.runlocal:
        config.select.downsampling = min(4, downsampling)
        return config
    if not arg.target:
        raise ValueError(
            "configs/paper/c4.py needs a target sample: "
            ":target=file:/path/target.jsonl (or tfds:NAME, or embedded)."
        )
    config.data.generic = arg.generic
    config.data.target = arg.target
    config.data.generic_valid_split = "validation"
    config.model.dtype = "bfloat16"
    config.train.steps = 300_000
    config.train.batch_size = 128
    config.train.target_batch_size = 128
    config.train.learning_rate = 5e-4
    config.train.warmup_steps = 2_000
    config.train.eval_every = 5_000
    config.train.log_every = 100
    config.eval.batch_size = 128
    config.eval.max_examples = 4_096
    config.select.downsampling = downsampling
    config.select.warmup_steps = 1_000
    config.outer.learning_rate = 2e-3
    config.mixing.generic_weight = 0.95
    config.checkpoint.every = 5_000
    config.checkpoint.keep = 3
    config.mesh.fsdp = arg.fsdp
    return config
