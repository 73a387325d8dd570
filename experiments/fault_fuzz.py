"""Fault fuzzing: every selection method SIGKILLed at random moments, resumed each time.

For each method: one uninterrupted run, then the same run killed ``--kills`` times
(alternately at a random step and while a checkpoint is being written: the moment a
temporary orbax directory appears under ``checkpoints/``), restarted with the same
command after each kill, and finally run to the end. The run passes when its
``metrics.jsonl`` equals the uninterrupted run's bit for bit (all values but
``steps_per_sec``). cds and rho score with a base run and its fine-tuned copy, made
first.

    python experiments/fault_fuzz.py --workdir /tmp/fault_fuzz [--methods anograd,dsir]

Prints a table and writes ``experiments/results/fault_fuzz.md``. Resumable: a method
whose row is in ``WORKDIR/results.json`` is skipped. About 2 minutes per method on
2 CPU cores (tiny model, 60 steps, a checkpoint every 3 steps).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import random
import shutil
import signal
import subprocess
import sys
import time

import benchlib

REPO_ROOT = benchlib.REPO_ROOT
STEPS = 60
FLAGS = (
    f"--config.train.steps={STEPS}",
    "--config.checkpoint.every=3",
    "--config.train.log_every=1",
    "--config.train.eval_every=20",
    "--config.select.warmup_steps=5",
)


def command(
    workdir: pathlib.Path, method: str, tfds_dir: str, *extra: str, flags=FLAGS
) -> list[str]:
    return [
        sys.executable,
        "-m",
        "adaptive_data.main",
        f"--config=configs/default.py:runlocal,method={method}",
        f"--workdir={workdir}",
        f"--config.data.tfds_data_dir={tfds_dir}",
        *flags,
        *extra,
    ]


def run_to_end(cmd: list[str]) -> None:
    result = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=1800)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{result.stderr[-3000:]}")


def last_step(workdir: pathlib.Path) -> int:
    path = workdir / "metrics.jsonl"
    if not path.exists():
        return -1
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    try:
        return json.loads(lines[-1])["step"] if lines else -1
    except json.JSONDecodeError:  # a line being written
        return -1


def checkpoint_in_flight(workdir: pathlib.Path) -> bool:
    directory = workdir / "checkpoints"
    return directory.is_dir() and any(not p.name.isdigit() for p in directory.iterdir())


def kill_once(cmd: list[str], workdir: pathlib.Path, kill_step: int, during_write: bool, rng):
    """Starts the run and SIGKILLs it once its metrics reach ``kill_step``: after a random
    delay of up to 0.3 s, or (``during_write``) the moment a checkpoint is being written.
    Returns the last step logged and whether a checkpoint write was in flight."""
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 900
    while proc.poll() is None and last_step(workdir) < kill_step and time.time() < deadline:
        time.sleep(0.01)
    if during_write:
        while proc.poll() is None and not checkpoint_in_flight(workdir):
            time.sleep(0.001)
    else:
        time.sleep(rng.uniform(0.0, 0.3))
    if proc.poll() is not None:
        stderr = proc.stderr.read().decode()[-2000:]
        raise RuntimeError(f"the run ended before the kill (code {proc.returncode}):\n{stderr}")
    in_write = checkpoint_in_flight(workdir)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return {"step": last_step(workdir), "during_checkpoint_write": in_write}


def rows(workdir: pathlib.Path) -> list[dict]:
    lines = (workdir / "metrics.jsonl").read_text().splitlines()
    return [
        {k: v for k, v in json.loads(line).items() if k != "steps_per_sec"}
        for line in lines
        if line.strip()
    ]


def references(root: pathlib.Path, tfds_dir: str) -> dict[str, str]:
    """A base run and its fine-tuned copy: the scoring models of cds and rho."""
    base, tuned = root / "_base", root / "_base_finetuned"
    run_to_end(command(base, "base", tfds_dir))
    tune_flags = (f"--config.finetune.init_from={base}", "--config.train.steps=20")
    run_to_end(command(tuned, "finetune", tfds_dir, flags=tune_flags))
    return {
        "cds": (f"--config.cds.generic_from={base}", f"--config.cds.target_from={tuned}"),
        "rho": (f"--config.rho.reference_from={tuned}",),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", default="/tmp/adaptive_data_fault_fuzz")
    parser.add_argument("--methods", default=",".join(benchlib.SELECTION_METHODS))
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tfds_data_dir", default=None, help="default: WORKDIR/tfds")
    parser.add_argument("--out", default=str(REPO_ROOT / "experiments/results/fault_fuzz.md"))
    args = parser.parse_args(argv)
    root = pathlib.Path(args.workdir)
    root.mkdir(parents=True, exist_ok=True)
    tfds_dir = args.tfds_data_dir or str(root / "tfds")
    results_file = root / "results.json"
    results = json.loads(results_file.read_text()) if results_file.exists() else {}
    chosen = benchlib.parse_list(args.methods, benchlib.SELECTION_METHODS)
    extra = references(root, tfds_dir) if {"cds", "rho"} & set(chosen) else {}
    rng = random.Random(args.seed)
    for method in chosen:
        if method in results:
            print(f"{method}: done before, skipped")
            continue
        flags = extra.get(method, ())
        reference, killed = root / method / "uninterrupted", root / method / "killed"
        shutil.rmtree(root / method, ignore_errors=True)
        started = time.time()
        run_to_end(command(reference, method, tfds_dir, *flags))
        # Distinct kill steps spread over the run (the last checkpoint write before the
        # end is at STEPS - 3); every other kill waits for a checkpoint write.
        kill_steps = sorted(rng.sample(range(0, STEPS - 5), args.kills))
        kills = [
            kill_once(command(killed, method, tfds_dir, *flags), killed, step, i % 2 == 1, rng)
            for i, step in enumerate(kill_steps)
        ]
        run_to_end(command(killed, method, tfds_dir, *flags))
        results[method] = {
            "kills": kills,
            "identical": rows(killed) == rows(reference),
            "wall_s": round(time.time() - started),
        }
        results_file.write_text(json.dumps(results, indent=2))
        print(f"{method}: {results[method]}", flush=True)

    header = "| method | kills | during a checkpoint write | killed at steps | final metrics |"
    lines = [header, "|---|---|---|---|---|"]
    for method, r in results.items():
        during = sum(k["during_checkpoint_write"] for k in r["kills"])
        steps = ", ".join(str(k["step"]) for k in r["kills"])
        verdict = "identical" if r["identical"] else "**DIFFERENT**"
        lines.append(f"| {method} | {len(r['kills'])} | {during} | {steps} | {verdict} |")
    identical = sum(r["identical"] for r in results.values())
    summary = (
        f"{identical} of {len(results)} methods end bit-identical to an uninterrupted run "
        f"after {sum(len(r['kills']) for r in results.values())} SIGKILLs in all."
    )
    machine = benchlib.machine_info()
    text = (
        "# Fault fuzzing\n\n"
        f"Command: `python experiments/fault_fuzz.py {' '.join(sys.argv[1:])}`\n\n"
        f"Machine: {machine['device_count']} x {machine['device_kind']}, "
        f"{machine['cpu_count']} CPUs, jax {machine['jax']}; date {time.strftime('%Y-%m-%d')}. "
        f"Tiny model (`runlocal`), {STEPS} steps, a checkpoint every 3 steps, one metrics "
        "row per step.\n\n" + "\n".join(lines) + f"\n\n{summary}\n"
    )
    pathlib.Path(args.out).write_text(text)
    print("\n".join(lines) + "\n" + summary)
    return 0 if identical == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
