"""The shared skeleton of every training config; recipe files fill in and override it."""

from __future__ import annotations

import ml_collections


def base_config(model: dict, task: str = "mlm") -> ml_collections.ConfigDict:
    """Every key the loop reads, with defaults. `model`: the model config as a dict (e.g.
    `bert_config("tiny", head="mlm").to_dict()`)."""
    c = ml_collections.ConfigDict()
    c.task = task  # key of jaxformer.tasks.TASKS or "module:Class"
    c.seed = 0  # params init, dropout keys
    c.workdir = ""  # default: runs/<config name>; --workdir wins
    c.model = ml_collections.ConfigDict(model)  # the model config's fields, all overridable

    c.data = ml_collections.ConfigDict()
    # store:DIR (made by `jaxformer prepare`) | default_corpus | synthetic | text:GLOB: your
    # own UTF-8 files (relative to the current directory), documents separated by blank lines,
    # one sentence per line; default_corpus and text: are prepared into a cached store on
    # first use. Held-out documents: eval_fraction of the store (docs/data.md)
    c.data.source = "default_corpus"
    c.data.tokenizer_family = "bert"  # bert (WordPiece) | roberta (byte BPE) | albert (Unigram)
    c.data.objective = "none"  # none (MLM only) | nsp (BERT) | sop (ALBERT)
    c.data.seq_len = 128  # tokens per example
    c.data.max_predictions = 20  # masked positions scored per example
    c.data.mlm_probability = 0.15
    c.data.whole_word = False
    # dynamic (RoBERTa: host, each read) | static (BERT: host, once) | device (in the step)
    c.data.masking = "dynamic"
    # pack consecutive instances into each row (segment_ids keep them apart; MLM-only
    # objectives on a store source; eval rows are packed too)
    c.data.pack = False
    c.data.short_seq_prob = 0.1
    c.data.dupe_factor = 1
    c.data.label_smoothing = 0.0
    c.data.eval_fraction = 0.02  # documents held out for eval
    c.data.synthetic_examples = 2048  # synthetic source only
    c.data.prefetch = 2  # batches prepared ahead on a background thread
    c.data.seed = 0

    c.batch_size = 32  # global, over all processes and devices
    c.grad_accum_steps = 1  # micro-batches per step (summed inside the step)
    c.num_train_steps = 1000  # schedules decay to this
    c.stop_after_steps = 0  # >0: halt early at this step (schedule unchanged)
    c.max_bad_steps = 10  # consecutive non-finite steps before stopping
    c.preemption_check_every_steps = 10  # multi-host: agree on SIGTERM every K steps
    c.aot_only = False  # compile the step for the mesh, print memory per device, run nothing
    c.aot_hbm_gib = 0.0  # with aot_only: say whether the step fits this much device memory
    c.profile = ml_collections.ConfigDict()
    c.profile.start_step = 2  # trace from here (after compilation and warm-up)
    c.profile.num_steps = 0  # steps traced into workdir/profile; 0 = no trace

    c.optimizer = ml_collections.ConfigDict()
    c.optimizer.name = "adamw"  # adamw | stable_adamw | lamb | adafactor
    c.optimizer.lr = 1e-4  # peak learning rate
    # constant | warmup_linear | warmup_rsqrt | warmup_cosine | warmup_stable_decay
    c.optimizer.schedule = "warmup_linear"
    c.optimizer.warmup_steps = 100
    c.optimizer.end_lr = 0.0
    c.optimizer.decay_fraction = 0.1  # warmup_stable_decay: the last share of steps decays
    c.optimizer.weight_decay = 0.01  # not applied to biases and LayerNorm
    c.optimizer.b1 = 0.9
    c.optimizer.b2 = 0.999
    c.optimizer.eps = 1e-6
    c.optimizer.clip_norm = 1.0  # global-norm clipping; 0 = off

    c.mesh = ml_collections.ConfigDict()
    c.mesh.data = -1  # -1: all remaining devices
    c.mesh.fsdp = 1
    c.mesh.tensor = 1

    c.checkpoint = ml_collections.ConfigDict()
    c.checkpoint.every_steps = 500
    c.checkpoint.keep = 3  # latest K kept (plus the best by best_metric)
    c.checkpoint.best_metric = "eval_loss"  # "" = keep only the latest
    c.checkpoint.best_mode = "min"
    c.checkpoint.async_save = True

    c.log = ml_collections.ConfigDict()
    c.log.every_steps = 10  # metrics.jsonl / TensorBoard / progress interval
    c.log.eval_every_steps = 500  # 0 = eval only at the end
    c.log.eval_batches = 4
    c.log.progress = True
    c.log.tensorboard = True
    c.log.plot = True  # loss_curve.png at the end

    c.peak_tflops_per_device = 0.0  # for MFU; 0 = from the device kind (none on CPU)
    c.demo_sentences = ()  # fill-mask sentences printed at the end

    c.distributed = ml_collections.ConfigDict()
    c.distributed.coordinator_address = ""  # host:port of process 0; "" = from the cluster env
    c.distributed.num_processes = 0
    c.distributed.process_id = -1
    c.distributed.cpu_collectives = ""  # "gloo" for multi-process CPU runs
    c.distributed.barrier_timeout_s = 0.0  # wait for the slowest process; 0 = 1800 s
    c.distributed.auto = True  # join the cluster its environment names (SLURM, MPI, TPU pod)
    return c


def default_config(**overrides) -> ml_collections.ConfigDict:
    """The loop's keys with their defaults and no model or task (for `LossTask`), with
    overrides by dotted key: `default_config(num_train_steps=50, **{"optimizer.lr": 1e-3})`.
    An unknown key is an error naming it."""
    c = base_config({}, task="")
    for key, value in overrides.items():
        *parents, last = key.split(".")
        node = c
        for part in parents:
            if part not in node or not isinstance(node[part], ml_collections.ConfigDict):
                raise KeyError(f"default_config: no config group {part!r} in {key!r}.")
            node = node[part]
        if last not in node:
            raise KeyError(f"default_config: unknown key {key!r}; see training/defaults.py.")
        node[last] = value
    return c
