"""The training loop: builds mesh, optimizer and state for the task it is given, restores the
latest good checkpoint, runs the compiled step, and owns all IO (metrics, eval, checkpoints,
signals). It knows no model family: the task (`training.Task`) is its only view of one."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable

import jax
import numpy as np
import optax

from jaxformer.training import checkpoint as ckpt_lib
from jaxformer.training import distributed
from jaxformer.training import goodput as goodput_lib
from jaxformer.training import observe
from jaxformer.training import sharding as sh
from jaxformer.training import state as state_lib
from jaxformer.training import step as step_lib
from jaxformer.training.checks import absolute, check_config
from jaxformer.training.config_lib import to_json
from jaxformer.training.optim import make_optimizer
from jaxformer.training.preemption import HostAgreement
from jaxformer.training.task import Task


class NonFiniteError(RuntimeError):
    """Too many consecutive steps had a non-finite loss or gradient."""


class _Preemption:
    """Turns SIGTERM and the first Ctrl-C (SIGINT) into a flag the loop polls: it saves a
    checkpoint after the current step and exits cleanly (saving from inside a signal handler
    is not safe: the step may be mid-dispatch). A second Ctrl-C aborts at once; the last
    finished checkpoint stays (orbax renames a save into place only when it is complete).
    Re-entrant: the loop enters it again inside `train`."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self, check_every: int = 1):
        self.flag = False
        self.name = ""
        self._old = {}
        self._depth = 0
        self.agree = HostAgreement(check_every)  # across hosts, every K steps

    def __enter__(self):
        self._depth += 1
        if self._depth == 1:
            for sig in self.SIGNALS:
                try:
                    self._old[sig] = signal.signal(sig, self._handle)
                except ValueError:  # not the main thread: no handler, the flag stays False
                    pass
        return self

    def _handle(self, signum, frame):
        # os.write, not print: the handler may run while the main thread is inside a print.
        if signum == signal.SIGINT and self.flag:
            os.write(2, b"\ntrain.py: second Ctrl-C: aborting without saving.\n")
            os._exit(130)
        if not self.flag:
            self.flag = True
            self.name = "SIGINT (Ctrl-C)" if signum == signal.SIGINT else "SIGTERM"
            if signum == signal.SIGINT:
                os.write(
                    2,
                    b"\ntrain.py: Ctrl-C: saving a checkpoint after this step, then exiting "
                    b"(press Ctrl-C again to abort without saving).\n",
                )

    def __exit__(self, *exc):
        self._depth -= 1
        if self._depth == 0:
            for sig, old in self._old.items():
                signal.signal(sig, old)
            self._old = {}
        return False

    def requested(self) -> bool:
        """Called once per step by every process; all of them get the same answer."""
        return self.agree(self.flag)


_param_norm = jax.jit(optax.global_norm)


def _mean(rows: list[dict]) -> dict:
    keys = rows[0].keys()
    return {k: float(np.mean([r[k] for r in rows])) for k in keys}


def _rows(batch) -> int:
    return int(np.shape(jax.tree.leaves(batch)[0])[0])


def evaluate(eval_fn, params, batches, batch_sh) -> dict:
    """Metrics over `batches` (this process's rows of each), each batch weighted by its rows:
    a smaller last batch counts for what it holds."""
    rows, weights = [], []
    # A slower host may still be compiling the eval step, whose collectives may be the first
    # over some group of devices (see distributed.barrier).
    distributed.barrier("eval")
    for b in batches:
        n = _rows(b) * jax.process_count()
        rows.append(jax.device_get(eval_fn(params, sh.to_global(b, batch_sh, n))))
        weights.append(n)
    if not rows:
        return {}
    return {k: float(np.average([r[k] for r in rows], weights=weights)) for k in rows[0]}


def fit_eval_batches(batches, global_batch: int, batch_shards: int, say=print) -> list:
    """The eval batches the sharded eval step can take, and never a silent loss of the eval:
    full batches pass; a short one (the held-out rows ran out) is cut to the rows every
    process has, in a multiple of this process's share of the `batch_shards` (data x fsdp
    devices), so it still evaluates; when nothing is left a warning says why. Every process
    must call this (it agrees on sizes)."""
    if batches is None:
        say("note: this task has no held-out set: no evaluation.")
        return []
    batches = list(batches)
    pc = jax.process_count()
    per_process = max(1, batch_shards // pc)
    counts = np.array([_rows(b) for b in batches], np.int32)
    if pc > 1:  # the processes may hold different numbers of rows and batches
        from jax.experimental import multihost_utils

        distributed.barrier("eval batches")  # follows each host's compile of the step
        n = int(np.max(multihost_utils.process_allgather(np.int32(len(counts)))))
        padded = np.zeros(n, np.int32)
        padded[: len(counts)] = counts
        counts = np.min(multihost_utils.process_allgather(padded), axis=0)
    usable = counts - counts % per_process
    out = [
        jax.tree.map(lambda x, k=int(k): np.asarray(x)[:k], b)
        for b, k in zip(batches, usable)
        if k > 0
    ]
    held_out = int(counts.sum()) * pc
    if not out:
        say(
            f"warning: no evaluation: the held-out set gives {held_out} example(s), fewer than "
            f"the {per_process * pc} device(s) an eval batch is split over. Hold out more "
            "(e.g. raise data.eval_fraction) or add data."
        )
    elif usable.sum() * pc < global_batch:
        say(
            f"note: the held-out set gives {int(usable.sum()) * pc} example(s), less than one "
            f"eval batch of {global_batch}: evaluating on them as one smaller batch."
        )
    return out


def train(config, workdir: str, task, log: Callable[[str], None] = print) -> dict:
    """Trains `task` as `config` says, in `workdir`. Returns a summary dict (also written to
    workdir/summary.json). Resumes from workdir/checkpoints when there is one. SIGTERM or
    Ctrl-C saves a checkpoint and returns (summary["preempted"]).

    `task`: a `Task`, or a callable `(config, workdir) -> Task` (a task class, or
    `jaxformer.tasks.get_task` for the one `config.task` names), called once the config is
    checked and saved, with the absolute workdir."""
    check_every = config.preemption_check_every_steps
    # From the start: a Ctrl-C while compiling still saves.
    with _Preemption(check_every) as preemption:
        return _train(config, workdir, task, log, preemption)


class _Window:
    """The per-step metrics since the last log row, and the row they make: their means, plus
    learning rate, skipped steps, parameter norm, throughput and MFU."""

    def __init__(self, tokens_per_step: float, flops_per_token: float, peak, compile_s: float):
        self.tokens_per_step, self.flops_per_token = tokens_per_step, flops_per_token
        self.peak, self.compile_s = peak, compile_s
        self.steps: list[dict] = []
        self.history: list[tuple[int, float]] = []  # (step, loss) of every step
        self.last: dict = {}  # the last row written
        self.t0 = time.perf_counter()

    def add(self, step: int, dev_metrics) -> dict:
        m = {k: float(v) for k, v in jax.device_get(dev_metrics).items()}
        self.steps.append(m)
        self.history.append((step, m["loss"]))
        return m

    def row(self, state) -> dict:
        dt = time.perf_counter() - self.t0
        row = _mean(self.steps)
        row["lr"] = self.steps[-1].get("lr", 0.0)
        row["skipped_total"] = float(jax.device_get(state.skipped))
        row["param_norm"] = float(_param_norm(state.params))
        sps = len(self.steps) / dt if dt > 0 else 0.0
        row["steps_per_s"], row["tokens_per_s"] = sps, sps * self.tokens_per_step
        if not self.last:  # the first row of this process's run
            row["compile_time_s"] = self.compile_s
        if self.peak and self.flops_per_token:
            row["mfu"] = (
                self.flops_per_token * row["tokens_per_s"] / (self.peak * jax.device_count())
            )
        self.last, self.steps, self.t0 = row, [], time.perf_counter()
        return row


def _non_finite(m: dict, at_step: int, state, ckpt) -> NonFiniteError:
    return NonFiniteError(
        f"{int(m['bad_streak'])} consecutive steps up to step {at_step} had a non-finite "
        f"loss or gradient (last loss {m['loss']}, grad norm {m['grad_norm']}); "
        f"{int(jax.device_get(state.skipped))} skipped in total. The last good state was "
        f"saved at step {int(jax.device_get(state.step))} in {ckpt.directory}. Lower the "
        "learning rate, check the data, or raise config.max_bad_steps."
    )


def _summary(step, preempted, preemption, compile_s, train_s, t_start, window, final_eval):
    history = window.history
    return {
        "step": step,
        "preempted": preempted,
        "preemption_syncs": preemption.agree.syncs,
        "compile_time_s": compile_s,
        "train_time_s": train_s,
        "total_time_s": time.perf_counter() - t_start,
        "first_loss": history[0][1] if history else None,
        "last_loss": history[-1][1] if history else None,
        "tokens_per_s": window.last.get("tokens_per_s"),
        "mfu": window.last.get("mfu"),
        **final_eval,
    }


def _end_of_run_metrics(task: Task, params, eval_batches, preempted, writer, step, say) -> dict:
    """The task's own metric (`task_metrics`) and its baselines, for the summary."""
    out = {}
    if not preempted:
        tm = {f"eval_task_{k}": float(v) for k, v in task.task_metrics(params).items()}
        if tm:
            writer.write(step, tm)
            say(
                "task metrics on the eval split: "
                + ", ".join(f"{k[10:]} {v:.4g}" for k, v in tm.items())
            )
            out.update(tm)
    if eval_batches:
        out.update(task.baseline_metrics(eval_batches))
    return out


def _train(config, workdir: str, task, log: Callable[[str], None], preemption) -> dict:
    t_start = time.perf_counter()
    check_config(config)  # names, counts and paths, before anything is written
    workdir = absolute(workdir)
    lead = jax.process_index() == 0
    say = log if lead else (lambda _: None)
    os.makedirs(workdir, exist_ok=True)
    if lead:
        with open(os.path.join(workdir, "config.json"), "w") as f:
            f.write(to_json(config))

    mesh = sh.make_mesh(dict(config.mesh))
    accum = config.grad_accum_steps
    sh.check_batch(config.batch_size, mesh, accum)
    total = config.num_train_steps
    if not isinstance(task, Task) and callable(task):
        task = task(config, workdir)
    tx, schedule = make_optimizer(config.optimizer, total)
    tx = task.wrap_optimizer(tx)  # e.g. a frozen encoder: zero updates for its params
    abstract, specs = state_lib.state_specs(task, tx, mesh, seed=config.seed)
    state_sh = sh.named(mesh, specs)
    say(
        f"mesh {dict(mesh.shape)} over {jax.device_count()} {jax.devices()[0].platform} "
        f"device(s), {jax.process_count()} process(es); "
        f"{sum(int(np.prod(x.shape)) for x in jax.tree.leaves(abstract.params)):,} parameters"
    )

    c = config.checkpoint
    # Orbax's set-up and restore use collectives; hosts may have built their data at
    # different speeds.
    distributed.barrier("checkpoint set-up")
    ckpt = ckpt_lib.Checkpointer(
        os.path.join(workdir, "checkpoints"),
        every_steps=c.every_steps,
        keep=c.keep,
        best_metric=c.best_metric,
        best_mode=c.best_mode,
        async_save=c.async_save,
        report=say,
    )
    pi, pc = jax.process_index(), jax.process_count()
    data = task.train_iterator(config.batch_size, pi, pc)
    data_summary = task.data_summary()
    for name, value in data_summary.items():
        say(f"{name}: {json.dumps(value)}")
    if config.aot_only:  # compile for the mesh, report memory, run no step
        from jaxformer.training import memory

        args = (task, tx, schedule, abstract, state_sh, next(data), mesh, say)
        return memory.run_aot(config, workdir, *args)
    restored = ckpt.restore(abstract, state_sh)
    if restored is not None:
        state, data_state, start = restored
        if data_state is not None:
            data.set_state(data_state)
        say(f"resumed from step {start} ({ckpt.directory})")
    else:
        state, _, _ = state_lib.create_state(task, tx, mesh, seed=config.seed)
        # Only a task that overrides the hook pays for a host copy of the fresh params.
        overridden = type(task).pretrained_params is not Task.pretrained_params
        params = task.pretrained_params(jax.device_get(state.params)) if overridden else None
        if params is not None:  # fine-tuning / continued pretraining
            state = state.replace(params=jax.device_put(params, state_sh.params))
            say("initialised from pretrained weights")
        start = 0

    first = next(data)
    train_fn, batch_sh = step_lib.compile_train_step(
        step_lib.make_train_step(task, tx, schedule, accum), state_sh, first, mesh
    )
    batch = sh.to_global(first, batch_sh, config.batch_size)
    t0 = time.perf_counter()
    compiled = train_fn.lower(state, batch).compile()
    compile_s = time.perf_counter() - t0
    say(f"compiled the train step in {compile_s:.1f} s")
    gp = goodput_lib.Goodput()
    gp.add("compile", compile_s)
    profiler = goodput_lib.Profiler(config.profile, workdir)

    eval_batches = None
    if config.log.eval_every_steps or config.checkpoint.best_metric:
        held_out = task.eval_batches(config.batch_size, pi, pc)
        shards = sh._axis_size(mesh, sh.BATCH_AXES)
        eval_batches = fit_eval_batches(held_out, config.batch_size, shards, say)
    eval_fn = (
        step_lib.compile_eval_step(
            step_lib.make_eval_step(task), state_sh.params, eval_batches[0], mesh
        )
        if eval_batches
        else None
    )
    # Eval batches may carry keys train batches lack (host masks under device masking).
    eval_sh = sh.batch_shardings(mesh, eval_batches[0]) if eval_batches else None

    # A run replays the steps after its checkpoint (all of them without one): old rows go.
    writer = observe.MetricWriter(workdir, tensorboard=config.log.tensorboard, resume_step=start)
    stop_at = min(total, config.stop_after_steps or total)
    progress = observe.Progress(total, start, enabled=config.log.progress)
    window = _Window(
        config.batch_size * task.tokens_per_example(),
        task.flops_per_token(abstract.params),
        observe.peak_flops_per_device(config.peak_tflops_per_device),
        compile_s,
    )
    preempted, eval_metrics = False, {}
    step, pending = start, None
    train_time_start = time.perf_counter()

    def handle(done_step, dev_metrics):
        """Reads a finished step's metrics; writes a row at log steps; stops a bad streak."""
        m = window.add(done_step, dev_metrics)
        if m["bad_streak"] >= config.max_bad_steps:
            ckpt.save(state, data.get_state(), wait=True)
            raise _non_finite(m, done_step, state, ckpt)
        if done_step % config.log.every_steps == 0 or done_step == stop_at:
            row = window.row(state)
            writer.write(done_step, row)
            progress.update(
                done_step, row["loss"], row["lr"], row["tokens_per_s"], row["steps_per_s"]
            )

    def run_eval(at_step) -> dict:
        e = evaluate(eval_fn, state.params, eval_batches, eval_sh) if eval_fn else {}
        e.update(task.eval_metrics(state.params))
        e = {f"eval_{k}": v for k, v in e.items()}
        if e:
            writer.write(at_step, e)
        return e

    # Each host compiled, restored and (process 0) opened its writers at its own speed.
    distributed.barrier("first step")
    with preemption, gp.loop():
        try:
            while step < stop_at:
                with gp.timed("profile"):
                    profiler.before_step(step, state)
                state, dev_metrics = compiled(state, batch)
                step += 1
                if pending is not None:  # read the previous step while this one runs
                    handle(*pending)
                pending = (step, dev_metrics)
                eval_metrics = {}
                if config.log.eval_every_steps and step % config.log.eval_every_steps == 0:
                    with gp.timed("eval"):
                        eval_metrics = run_eval(step)
                if ckpt.should_save(step) and step < stop_at:
                    with gp.timed("checkpoint"):
                        ckpt.save(state, data.get_state(), eval_metrics or None)
                if preemption.requested():
                    preempted = True
                    break
                if step < stop_at:
                    with gp.timed("data_wait"):
                        batch = sh.to_global(next(data), batch_sh, config.batch_size)
            if pending is not None:
                handle(*pending)
        finally:
            progress.close()
            with gp.timed("profile"):
                profiler.stop(state)
    train_s = time.perf_counter() - train_time_start

    evaluated_now = config.log.eval_every_steps and step % config.log.eval_every_steps == 0
    final_eval = (
        {} if preempted else (eval_metrics if evaluated_now and eval_metrics else run_eval(step))
    )
    with gp.timed("checkpoint"):
        ckpt.save(state, data.get_state(), final_eval or None, wait=True)
        ckpt.close()
    if preempted:
        say(
            f"\n{preemption.name or 'a stop signal'} at step {step}: checkpoint saved in "
            f"{os.path.join(ckpt.directory, str(step))}; run the same command to resume."
        )
    if hasattr(data, "close"):
        data.close()

    summary = _summary(step, preempted, preemption, compile_s, train_s, t_start, window, final_eval)
    summary.update(data_summary)
    summary.update(
        _end_of_run_metrics(task, state.params, eval_batches, preempted, writer, step, say)
    )
    if "eval_mlm_accuracy" in summary and "eval_baseline_mlm_accuracy" in summary:
        say(
            f"held-out masked-token accuracy {summary['eval_mlm_accuracy']:.1%} "
            f"(most-frequent-token baseline {summary['eval_baseline_mlm_accuracy']:.1%}, "
            f"always {summary['baseline_token']!r})"
        )
    if lead and not preempted:
        if config.log.plot:
            png = observe.plot_losses(workdir)
            if png:
                say(f"loss curve: {png}")
        if step >= total:
            text = task.finish(state.params, workdir)
            if text:
                say(text)
                writer.text("finish", text, step)
                summary["finish"] = text
    summary["goodput"] = gp.summary(time.perf_counter() - t_start)
    writer.write(step, {f"goodput_{k}": float(v) for k, v in summary["goodput"].items()})
    if summary["goodput"]["input_bound"]:
        say(
            f"input-bound: the loop waited {summary['goodput']['data_wait_s']:.1f} s for data "
            f"against {summary['goodput']['step_s']:.1f} s of steps; raise data.prefetch or "
            "speed up the input pipeline."
        )
    writer.close()
    if lead:
        with open(os.path.join(workdir, "summary.json"), "w") as f:
            json.dump(summary, f, indent=2)
    say(
        f"done: step {step}, loss {summary['first_loss']} -> {summary['last_loss']}, "
        f"{(summary['tokens_per_s'] or 0):,.0f} tokens/s, {summary['total_time_s']:.0f} s"
    )
    return summary
