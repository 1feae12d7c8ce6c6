"""Two jax.distributed CPU processes on this machine give the one-process answer."""

import json
import os
import socket
import subprocess
import sys
import time

import pytest

ARGS = ["optimize", "--model", "megatron-1t", "--system", "dgx-a100-selene",
        "--global-batch", "3072", "--exhaustive", "--free", "scale_up.bandwidth_GB_s",
        "--json"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(tmp_path):
    env = dict(os.environ, CPO_OPT_CACHE_DIR=str(tmp_path / "cache"), JAX_PLATFORMS="cpu")
    for k in ("CPO_OPT_COORDINATOR", "CPO_OPT_NUM_PROCESSES", "CPO_OPT_PROCESS_ID",
              "SLURM_NTASKS", "SLURM_PROCID"):
        env.pop(k, None)
    return env


@pytest.mark.slow  # three cold-cache processes (one plus a jax.distributed pair): 25-65 s
def test_two_processes_equal_one(tmp_path):
    env = _env(tmp_path)
    one = subprocess.run([sys.executable, "-m", "cpo_opt", *ARGS], capture_output=True,
                         text=True, env=env, timeout=900)
    assert one.returncode == 0, one.stderr
    single = json.loads(one.stdout)
    assert single["processes"] == 1

    port = _free_port()
    t0 = time.perf_counter()
    procs = [subprocess.Popen(
        [sys.executable, "-m", "cpo_opt", *ARGS, "--coordinator", f"127.0.0.1:{port}",
         "--num-processes", "2", "--process-id", str(i)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for i in range(2)]
    outs = [p.communicate(timeout=900) for p in procs]
    wall = time.perf_counter() - t0
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err
    assert outs[1][0] == ""  # only process 0 prints
    multi = json.loads(outs[0][0])
    print(f"two-process wall {wall:.1f} s")
    assert multi["processes"] == 2
    assert multi["evaluations"] == single["evaluations"]
    assert multi["detail"]["feasible"] == single["detail"]["feasible"]
    assert multi["step_time_s"] == pytest.approx(single["step_time_s"], rel=1e-12)
    assert multi["plan"] == single["plan"] and multi["hardware"] == single["hardware"]


def test_incomplete_distributed_flags_are_bad_input(tmp_path):
    out = subprocess.run([sys.executable, "-m", "cpo_opt", "optimize", "--model", "megatron-1t",
                          "--system", "dgx-a100-selene", "--coordinator", "127.0.0.1:1234"],
                         capture_output=True, text=True, env=_env(tmp_path), timeout=120)
    assert out.returncode == 2 and out.stdout == ""
    assert len(out.stderr.strip().splitlines()) == 1 and "--num-processes" in out.stderr
