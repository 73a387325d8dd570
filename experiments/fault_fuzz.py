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

``--processes=2``: the same for 2-process runs (CPU collectives over loopback, one
device per process), for the methods that need no other run (``MethodSpec.needs_runs``
of ``adaptive_data.methods.METHODS``; default base, anograd, soba, align_filter). Each
kill SIGKILLs process 0 or process 1 (at random); the survivor must exit on its own with
``exit_codes.PEER_LOST`` within ``--peer_timeout_s`` plus a margin (its exit code and
seconds after the kill are recorded), then both are relaunched with the same commands
(process 0 takes the workdir's stale lock over). The final metrics must equal an
uninterrupted 2-process run's. Writes ``experiments/results/fault_fuzz_multiprocess.md``.

    nohup nice -n 10 python experiments/fault_fuzz.py --processes=2 \
        --workdir /tmp/fault_fuzz_mp --tfds_data_dir /tmp/tfds > /tmp/fault_fuzz_mp.log &
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import random
import shutil
import signal
import socket
import subprocess
import sys
import time

import benchlib

from adaptive_data import command_line, exit_codes, metrics
from adaptive_data.methods import METHODS

REPO_ROOT = benchlib.REPO_ROOT
STEPS = 60
FLAGS = (
    f"--config.train.steps={STEPS}",
    "--config.checkpoint.every=3",
    "--config.train.log_every=1",
    "--config.train.eval_every=20",
    "--config.select.warmup_steps=5",
)


# The reserved shard of a reference that must not see the candidates (rho's).
RESERVED_SHARD_FLAGS = ("--config.data.reserved_fraction=0.2",)


def command(
    workdir: pathlib.Path, method: str, tfds_dir: str, *extra: str, flags=FLAGS
) -> list[str]:
    return command_line.driver_command(
        f"configs/default.py:runlocal,method={method}",
        workdir,
        overrides={"data.tfds_data_dir": tfds_dir},
        flags=(*flags, *extra),
    )


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


# ----------------------------------------------------------------------------- 2 processes

# Methods of the 2-process fuzz when --methods is not given.
MULTIPROCESS_METHODS = ("base", "anograd", "soba", "align_filter")
# The survivor must exit within --peer_timeout_s plus this (a loaded 2-core machine).
SURVIVOR_MARGIN_S = 60


def standalone_methods() -> list[str]:
    """Registered methods that need no other run's workdir (the 2-process fuzz's choice)."""
    return [name for name, spec in METHODS.items() if not spec.needs_runs]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Job:
    """Both processes of one launch of a 2-process run; their stderr in ``log_dir``."""

    def __init__(self, cmd: list[str], log_dir: pathlib.Path, peer_timeout_s: float):
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir = log_dir
        port = _free_port()
        env = {
            **os.environ,
            "JAX_PLATFORMS": "cpu",
            "XLA_FLAGS": "--xla_force_host_platform_device_count=1",
        }
        self.procs = []
        for i in range(2):
            flags = (
                f"--coordinator_address=127.0.0.1:{port}",
                "--num_processes=2",
                f"--process_id={i}",
                f"--peer_timeout_s={peer_timeout_s}",
            )
            with open(log_dir / f"process_{i}.err", "w") as err:
                self.procs.append(
                    subprocess.Popen(
                        [*cmd, *flags],
                        cwd=REPO_ROOT,
                        env=env,
                        stdout=subprocess.DEVNULL,
                        stderr=err,
                    )
                )

    def stderr(self, i: int) -> str:
        return (self.log_dir / f"process_{i}.err").read_text(errors="replace")

    def alive(self) -> bool:
        return all(p.poll() is None for p in self.procs)

    def wait(self, timeout_s: float) -> list[int]:
        try:
            return [p.wait(timeout=timeout_s) for p in self.procs]
        finally:
            self.kill()

    def kill(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def run_job_to_end(cmd, log_dir, peer_timeout_s) -> Job:
    job = Job(cmd, log_dir, peer_timeout_s)
    codes = job.wait(timeout_s=1800)
    if codes != [0, 0]:
        raise RuntimeError(f"{' '.join(cmd)}: exit codes {codes}:\n{job.stderr(0)[-3000:]}")
    return job


def kill_one_process(cmd, workdir, log_dir, kill_step, during_write, peer_timeout_s, rng):
    """Launches both processes, SIGKILLs one (at random) once the metrics reach
    ``kill_step`` (after up to 0.3 s, or the moment a checkpoint is being written), and
    waits for the survivor to exit on its own. Returns what happened."""
    job = Job(cmd, log_dir, peer_timeout_s)
    try:
        deadline = time.time() + 900
        while job.alive() and last_step(workdir) < kill_step and time.time() < deadline:
            time.sleep(0.01)
        if during_write:
            while job.alive() and not checkpoint_in_flight(workdir):
                time.sleep(0.001)
        else:
            time.sleep(rng.uniform(0.0, 0.3))
        if not job.alive():
            codes = [p.poll() for p in job.procs]
            raise RuntimeError(f"a process ended before the kill ({codes}):\n{job.stderr(0)}")
        victim = rng.randrange(2)
        in_write = checkpoint_in_flight(workdir)
        job.procs[victim].send_signal(signal.SIGKILL)
        killed_at = time.time()
        job.procs[victim].wait()
        survivor = job.procs[1 - victim]
        try:
            code = survivor.wait(timeout=peer_timeout_s + SURVIVOR_MARGIN_S)
        except subprocess.TimeoutExpired:
            code = None  # still running: a failure of the fuzz (recorded, then killed)
        return {
            "step": last_step(workdir),
            "during_checkpoint_write": in_write,
            "killed_process": victim,
            "survivor_exit_code": code,
            "survivor_exit_s": round(time.time() - killed_at, 1),
        }
    finally:
        job.kill()


def took_over_lock(log_dir: pathlib.Path) -> bool:
    """Whether process 0 of the launch logged in ``log_dir`` took the workdir's lock over."""
    err = (log_dir / "process_0.err").read_text(errors="replace")
    return "Took over the lock of workdir" in err


def fuzz_two_processes(method, root, tfds_dir, kills, peer_timeout_s, rng) -> dict:
    """One method's 2-process fuzz: an uninterrupted run, ``kills`` killed launches each
    relaunched, the final metrics compared."""
    reference, killed, logs = (root / method / name for name in ("uninterrupted", "killed", "logs"))
    shutil.rmtree(root / method, ignore_errors=True)
    started = time.time()
    run_job_to_end(command(reference, method, tfds_dir), logs / "uninterrupted", peer_timeout_s)
    kill_steps = sorted(rng.sample(range(0, STEPS - 5), kills))
    records = []
    for i, step in enumerate(kill_steps):
        record = kill_one_process(
            command(killed, method, tfds_dir),
            killed,
            logs / f"kill_{i}",
            step,
            i % 2 == 1,
            peer_timeout_s,
            rng,
        )
        if i > 0:  # this launch followed a kill
            record["relaunch_took_over_lock"] = took_over_lock(logs / f"kill_{i}")
        records.append(record)
        print(f"  {method} kill {i}: {record}", flush=True)
    run_job_to_end(command(killed, method, tfds_dir), logs / "final", peer_timeout_s)
    return {
        "kills": records,
        "final_took_over_lock": took_over_lock(logs / "final"),
        "identical": rows(killed) == rows(reference),
        "wall_s": round(time.time() - started),
    }


def multiprocess_table(results: dict) -> tuple[list[str], str]:
    header = (
        "| method | kills | of process 0 / 1 | during a checkpoint write | killed at steps "
        "| survivors' exit codes | survivors' exit after kill (s) | final metrics |"
    )
    lines = [header, "|---|---|---|---|---|---|---|---|"]
    for method, r in results.items():
        ks = r["kills"]
        of_0 = sum(k["killed_process"] == 0 for k in ks)
        during = sum(k["during_checkpoint_write"] for k in ks)
        steps = ", ".join(str(k["step"]) for k in ks)
        codes = ", ".join(str(k["survivor_exit_code"]) for k in ks)
        times = ", ".join(f"{k['survivor_exit_s']:.1f}" for k in ks)
        verdict = "identical" if r["identical"] else "**DIFFERENT**"
        lines.append(
            f"| {method} | {len(ks)} | {of_0} / {len(ks) - of_0} | {during} | {steps} "
            f"| {codes} | {times} | {verdict} |"
        )
    identical = sum(r["identical"] for r in results.values())
    all_kills = [k for r in results.values() for k in r["kills"]]
    peer_lost = sum(k["survivor_exit_code"] == exit_codes.PEER_LOST for k in all_kills)
    summary = (
        f"{identical} of {len(results)} methods end bit-identical to an uninterrupted 2-process "
        f"run after {len(all_kills)} SIGKILLs in all; {peer_lost} of {len(all_kills)} survivors "
        f"exited on their own with exit code {exit_codes.PEER_LOST} (PEER_LOST)."
    )
    return lines, summary


def rows(workdir: pathlib.Path) -> list[dict]:
    """The run's metrics rows without the wall-clock rate (the rest must match exactly)."""
    return [
        {k: v for k, v in row.items() if k != "steps_per_sec"}
        for row in metrics.read_metrics(workdir)
    ]


def references(root: pathlib.Path, tfds_dir: str, chosen) -> dict[str, tuple[str, ...]]:
    """``method -> flags`` giving each chosen method the runs its ``needs_runs`` declare:
    a base run (of seed 0, of seed 1 where the need is an independent seed, or on the
    reserved shard of the pool) or its fine-tuned copy, each made once; a method whose
    reference trains on the reserved shard draws from the rest."""
    made: dict[tuple[int, bool, bool], pathlib.Path] = {}

    def run(seed: int, fine_tuned: bool, reserved: bool) -> pathlib.Path:
        if (seed, fine_tuned, reserved) not in made:
            base = root / f"_base_seed{seed}{'_reserved' if reserved else ''}"
            if (seed, False, reserved) not in made:
                shard = RESERVED_SHARD_FLAGS + ("--config.data.generic_shard=reserved",)
                flags = (f"--config.seed={seed}", *(shard if reserved else ()))
                run_to_end(command(base, "base", tfds_dir, *flags))
                made[seed, False, reserved] = base
            if fine_tuned:
                tuned = base.with_name(f"{base.name}_finetuned")
                tune_flags = (f"--config.finetune.init_from={base}", "--config.train.steps=20")
                run_to_end(command(tuned, "finetune", tfds_dir, flags=tune_flags))
                made[seed, True, reserved] = tuned
        return made[seed, fine_tuned, reserved]

    flags = {}
    for method in chosen:
        needs = METHODS[method].needs_runs
        if not needs:
            continue
        flags[method] = tuple(
            f"--config.{key}="
            f"{run(int(need.independent_seed), need.fine_tuned, need.reserved_shard)}"
            for key, need in needs.items()
        ) + (RESERVED_SHARD_FLAGS if any(n.reserved_shard for n in needs.values()) else ())
    return flags


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", default="/tmp/adaptive_data_fault_fuzz")
    parser.add_argument("--methods", default=None, help="default: see the module doc")
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tfds_data_dir", default=None, help="default: WORKDIR/tfds")
    parser.add_argument("--processes", type=int, choices=(1, 2), default=1)
    parser.add_argument("--peer_timeout_s", type=float, default=10.0, help="--processes=2")
    parser.add_argument("--out", default=None, help="default: experiments/results/...md")
    args = parser.parse_args(argv)
    root = pathlib.Path(args.workdir)
    root.mkdir(parents=True, exist_ok=True)
    tfds_dir = args.tfds_data_dir or str(root / "tfds")
    results_file = root / "results.json"
    results = json.loads(results_file.read_text()) if results_file.exists() else {}
    if args.processes == 2:
        return main_two_processes(args, root, tfds_dir, results_file, results)
    args.methods = args.methods or ",".join(benchlib.SELECTION_METHODS)
    args.out = args.out or str(REPO_ROOT / "experiments/results/fault_fuzz.md")
    chosen = benchlib.parse_list(args.methods, benchlib.SELECTION_METHODS)
    extra = references(root, tfds_dir, chosen)
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


def main_two_processes(args, root, tfds_dir, results_file, results) -> int:
    chosen = benchlib.parse_list(
        args.methods or ",".join(MULTIPROCESS_METHODS), standalone_methods()
    )
    for method in chosen:
        if method in results:
            print(f"{method}: done before, skipped")
            continue
        # A generator per method: a resumed fuzz draws other kill steps for each method.
        rng = random.Random(f"{args.seed}/{method}")
        results[method] = fuzz_two_processes(
            method, root, tfds_dir, args.kills, args.peer_timeout_s, rng
        )
        results_file.write_text(json.dumps(results, indent=2))
        print(f"{method}: {results[method]}", flush=True)
        write_multiprocess_report(results, args.peer_timeout_s, args.out)  # after each method
    passed = all(
        r["identical"] and all(k["survivor_exit_code"] == exit_codes.PEER_LOST for k in r["kills"])
        for r in results.values()
    )
    return 0 if passed else 1


def write_multiprocess_report(results: dict, peer_timeout_s: float, out: str | None) -> None:
    """Writes (and prints) the table of the 2-process fuzz's ``results``."""
    lines, summary = multiprocess_table(results)
    machine = benchlib.machine_info()
    after_kill = [k for r in results.values() for k in r["kills"][1:]]
    takeovers = sum(k["relaunch_took_over_lock"] for k in after_kill)
    takeovers += sum(r["final_took_over_lock"] for r in results.values())
    relaunches = len(after_kill) + len(results)
    text = (
        "# Fault fuzzing of 2-process runs\n\n"
        f"Command: `python experiments/fault_fuzz.py {' '.join(sys.argv[1:])}`\n\n"
        f"Machine: {machine['cpu_count']} CPUs, jax {machine['jax']}; date "
        f"{time.strftime('%Y-%m-%d')}. Two processes on one host (CPU collectives over "
        f"loopback, one device each), tiny model (`runlocal`), {STEPS} steps, a checkpoint "
        f"every 3 steps, one metrics row per step, `--peer_timeout_s={peer_timeout_s:g}`. "
        "Each kill SIGKILLs one process (0 or 1 at random; every other kill the moment a "
        "checkpoint is being written); the survivor exits on its own; both are relaunched "
        "with the same commands. A relaunch finds the workdir lock left behind (and takes it "
        "over, with a log line) when process 0 did not end through Python's normal exit "
        f"(SIGKILLed, or a survivor leaving with `os._exit`): {takeovers} of {relaunches} "
        "relaunches.\n\n" + "\n".join(lines) + f"\n\n{summary}\n"
    )
    out = out or str(REPO_ROOT / "experiments/results/fault_fuzz_multiprocess.md")
    pathlib.Path(out).write_text(text)
    print("\n".join(lines) + "\n" + summary, flush=True)


if __name__ == "__main__":
    sys.exit(main())
