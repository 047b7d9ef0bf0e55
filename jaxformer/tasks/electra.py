"""ELECTRA pretraining: a small MLM generator and a replaced-token-detection discriminator
trained together; only the discriminator is kept for fine-tuning (`config.task = "electra"`)."""

from __future__ import annotations

import os

import jax

from jaxformer.models import EncoderConfig, EncoderModel
from jaxformer.models.configs import generator_dims
from jaxformer.objectives import pretraining as objectives
from jaxformer.tasks.pretrain import PretrainTask, check_masking, check_pack
from jaxformer.training.task import Task


def generator_config(disc: EncoderConfig, fraction: float) -> EncoderConfig:
    """The generator of `disc` by `models.configs.generator_dims`, sharing its embedding
    width E (the embeddings themselves are shared)."""
    return disc.replace(
        head="mlm",
        embedding_size=disc.emb_size,
        **generator_dims(disc.hidden_size, disc.intermediate_size, fraction),
    )


class ElectraTask(PretrainTask):
    """config.model: the discriminator; config.electra.generator_fraction: generator width as
    a fraction of it (`models.configs.ELECTRA_GENERATOR_FRACTION`: 1 small, 1/3 base, 1/4
    large); config.electra.rtd_weight: λ (50)."""

    def __init__(self, config, workdir: str):
        Task.__init__(self, config, workdir)
        check_masking(config)
        check_pack(config, "none")
        d = config.data
        self.seq_len, self.objective = d.seq_len, "none"
        disc = dict(config.model)
        disc["head"] = "rtd"
        self.model_cfg = EncoderConfig.from_dict(disc)
        self.model = EncoderModel(self.model_cfg)  # what fine-tuning keeps
        self.generator = EncoderModel(
            generator_config(self.model_cfg, config.electra.generator_fraction)
        )
        self._tokenizer = None
        self._instances = None

    def init_params(self, rng):
        kg, kd = jax.random.split(rng)
        x = self.init_inputs()
        gen = self.generator.init({"params": kg, "dropout": kg}, **x)["params"]
        disc = self.model.init({"params": kd, "dropout": kd}, **x)["params"]
        gen = dict(gen)
        # The generator reads the discriminator's embeddings: no copy of its own.
        gen["encoder"] = {k: v for k, v in gen["encoder"].items() if k != "embeddings"}
        return {"generator": gen, "discriminator": disc}

    def normalizers(self, batch):
        return objectives.electra_normalizers(batch)

    def loss_fn(self, params, batch, rng, norms, deterministic=False):
        return objectives.electra_loss(
            self.generator,
            self.model,
            params,
            batch,
            rng,
            rtd_weight=self.config.electra.rtd_weight,
            deterministic=deterministic,
            norms=norms,
        )

    def flops_per_token(self, params) -> float:
        """Training FLOPs per token of both encoders (`benchmarking.encoder_flops`): the
        discriminator on every token, the generator with its MLM head at the masked
        positions."""
        from jaxformer.benchmarking import encoder_flops

        return (
            encoder_flops(self.model_cfg, self.seq_len, "train")["total"]
            + encoder_flops(
                self.generator.cfg,
                self.seq_len,
                "train",
                predictions=self.config.data.max_predictions,
            )["total"]
        )

    def finish(self, params, workdir):
        """Exports the discriminator as a HuggingFace directory (what fine-tuning loads)."""
        from jaxformer.convert.huggingface import save_pretrained

        out = os.path.join(workdir, "discriminator")
        save_pretrained(self.model, params["discriminator"], out)
        if self._tokenizer is not None and hasattr(self._tokenizer, "save"):
            self._tokenizer.save(out)
        return f"ELECTRA discriminator exported to {out} (load with jaxformer.from_pretrained)."
