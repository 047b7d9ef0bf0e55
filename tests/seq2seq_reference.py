"""The plumbing of the encoder-decoder parity tests (BART, Marian, T5): transformers' forward
and generate ids laid out as ours, our ids under transformers' conventions, the largest
forward differences, a padded test batch, conversion, and saving and loading both ways. The
tests keep their inputs, comparisons and tolerances."""

import os

import numpy as np
import torch
import transformers


def hf_forward(hf, x, mask, y, ymask=None):
    """transformers' outputs for sources `x` (padding mask `mask`) and decoder inputs `y`."""
    with torch.no_grad():
        return hf(
            input_ids=torch.tensor(x),
            attention_mask=torch.tensor(mask),
            decoder_input_ids=torch.tensor(y),
            decoder_attention_mask=None if ymask is None else torch.tensor(ymask),
        )


def generation_config(hf, num_beams, max_new, **settings):
    """The model's own generation config without sampling, with `num_beams`, at most
    `max_new` new tokens and `settings` on top."""
    gc = transformers.GenerationConfig.from_dict(hf.generation_config.to_dict())
    gc.num_beams, gc.max_new_tokens, gc.do_sample = num_beams, max_new, False
    for key, value in settings.items():
        setattr(gc, key, value)
    return gc


def hf_generate(hf, x, mask, gc, pad):
    """generate's ids under `gc` as `jaxformer.generate` lays them out: without the start
    token, padded with `pad` to gc.max_new_tokens columns."""
    with torch.no_grad():
        ref = hf.generate(
            input_ids=torch.tensor(x), attention_mask=torch.tensor(mask), generation_config=gc
        ).numpy()[:, 1:]
    return np.pad(ref, ((0, 0), (0, gc.max_new_tokens - ref.shape[1])), constant_values=pad)


def max_diffs(out, ref, mask, ymask):
    """max |ours - transformers| of the encoder states and of the logits, each at the real
    (unpadded) positions only."""
    real, dreal = mask.astype(bool), ymask.astype(bool)
    enc = np.abs(
        np.asarray(out.encoder_hidden_state)[real] - ref.encoder_last_hidden_state.numpy()[real]
    )
    logits = np.abs(np.asarray(out.logits)[dreal] - ref.logits.numpy()[dreal])
    return enc.max(), logits.max()


def padded_batch(seed, src_len, vocab, low, pad, start):
    """4 random sources of `src_len` ids in [low, vocab), rows 1 and 2 padded with `pad` after
    7 and 2 tokens, and 4 decoder inputs of 8 ids that begin with `start`, row 3 masked after
    5; returns (x, mask, y, ymask)."""
    rs = np.random.RandomState(seed)
    x = rs.randint(low, vocab, (4, src_len))
    mask = np.ones_like(x)
    mask[1, 7:] = 0
    mask[2, 2:] = 0
    x[mask == 0] = pad
    y = rs.randint(low, vocab, (4, 8))
    y[:, 0] = start
    ymask = np.ones_like(y)
    ymask[3, 5:] = 0
    return x, mask, y, ymask


def generate_as_transformers(model, params, x, mask, max_new, num_beams):
    """`jaxformer.generate`'s ids with transformers' conventions: its beam bookkeeping and a
    length penalty of 1."""
    import jaxformer

    out = jaxformer.generate(
        model,
        params,
        x,
        mask,
        max_length=max_new,
        num_beams=num_beams,
        length_penalty_alpha=1.0,
        beam_style="transformers",
    )
    return np.asarray(out.sequences)


def converted(hf, cfg, model_cls, params_from_state_dict):
    """(hf, our `model_cls` for `cfg`, our parameters converted from hf's state dict)."""
    state = {k: v.detach().numpy() for k, v in hf.state_dict().items()}
    return hf, model_cls(cfg), params_from_state_dict(state, cfg)


def saved_both_ways(hf, model, params, folder):
    """Ours saved (folder/ours) and loaded by transformers as hf's class, and transformers'
    save of hf (folder/hf) loaded by `jaxformer.from_pretrained`: (hf2, (model3, params3))."""
    import jaxformer

    jaxformer.save_pretrained(model, params, os.path.join(folder, "ours"))
    hf2 = type(hf).from_pretrained(os.path.join(folder, "ours")).eval()
    hf.save_pretrained(os.path.join(folder, "hf"))
    return hf2, jaxformer.from_pretrained(os.path.join(folder, "hf"))


def round_trip_logits(hf, model, params, x, mask, y, folder):
    """`saved_both_ways`, then the logits each side gives before and after: (transformers
    loaded from our save, transformers), (ours, ours loaded from transformers' save), and
    that loaded (model3, params3)."""
    hf2, (model3, params3) = saved_both_ways(hf, model, params, folder)
    theirs = (hf_forward(hf2, x, mask, y).logits.numpy(), hf_forward(hf, x, mask, y).logits.numpy())
    a = model.apply({"params": params}, x, mask, y).logits
    b = model3.apply({"params": params3}, x, mask, y).logits
    return theirs, (np.asarray(a), np.asarray(b)), (model3, params3)


def both_generate(hf, model, params, x, mask, max_new, num_beams, pad):
    """(transformers' ids under the model's own generation config, our ids), both laid out
    as `hf_generate` says."""
    gc = generation_config(hf, num_beams, max_new)
    ours = generate_as_transformers(model, params, x, mask, max_new, num_beams)
    return hf_generate(hf, x, mask, gc, pad), ours
