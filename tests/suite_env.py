"""The suite's JAX settings and the environment of the Python processes its tests start, in
one place: conftest.py and the scripts run as subprocesses call `configure_jax`, the tests
that start them pass `child_env`."""

import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
CACHE_DIR = os.environ.get(
    "JAX_COMPILATION_CACHE_DIR", os.path.join(os.path.expanduser("~"), ".cache", "jaxformer-jax")
)


def configure_jax():
    """The persistent compilation cache (shared by the tests and their subprocesses) and
    float32 matmuls at full precision (the parity tolerances assume it)."""
    import jax

    jax.config.update("jax_compilation_cache_dir", CACHE_DIR)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    jax.config.update("jax_default_matmul_precision", "highest")


def child_env(devices=None, **extra):
    """os.environ for a child process: CPU only, this checkout first on PYTHONPATH, `devices`
    fake CPU devices (None: XLA_FLAGS removed, so one device) and `extra` on top."""
    env = dict(
        os.environ,
        JAX_PLATFORMS="cpu",
        PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
    )
    env.pop("XLA_FLAGS", None)
    if devices:
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    env.update(extra)
    return env


def run_python(args, devices=None, cwd=ROOT, timeout=900, check=True, **extra):
    """`python ARGS` in `cwd` with `child_env(devices, **extra)`, output captured; with
    `check`, a failure shows its output."""
    out = subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        env=child_env(devices, **extra),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check:
        assert out.returncode == 0, out.stdout + out.stderr
    return out
