"""Export a trained checkpoint as a Hugging Face ``GPTJForCausalLM`` folder (and import one back).

    posym export-hf runs/smoke/number-s0                # final checkpoint -> runs/smoke/number-s0/hf
    posym export-hf data/paper/number-s0 --out number-hf
    posym export-hf runs/paper/letter-s1 --step 3400

The folder holds ``config.json`` + ``model.safetensors`` (written by ``save_pretrained``), a word-level
tokenizer (``tokenizer.json``: one id per task token, split on spaces, exactly :class:`posym.tasks.Vocab`),
``posym.json`` (where the weights came from) and a ``README.md``. It loads offline with::

    from transformers import AutoTokenizer, GPTJForCausalLM
    model = GPTJForCausalLM.from_pretrained("number-hf")
    tok = AutoTokenizer.from_pretrained("number-hf")
    ids = tok("e 3 ... 7", return_tensors="pt").input_ids   # the 17 prompt tokens
    answer = tok.decode(model(ids).logits[0, -1].argmax())

and gives the same logits as :class:`posym.model.GPTJ` (``tests/test_export.py``).
"""
from __future__ import annotations

import json
from pathlib import Path

from . import io as pio

N_POSITIONS = 8192  # HF GPT-J precomputes its RoPE table up to n_positions; length generalisation goes to 5,000


def _locate(run: str | Path, step: int | None) -> tuple[Path, dict | None, Path | None]:
    """(checkpoint file, run config.json contents or None, folder that holds config.json)."""
    from .train import ckpt_path, list_checkpoints

    run = Path(run)
    if run.is_file():
        cfg_file = run.parent / "config.json"
        if step is not None:
            raise ValueError("--step selects a checkpoint of a run folder; RUN is already a checkpoint file")
        return run, (pio.read_json(cfg_file) if cfg_file.exists() else None), run.parent
    if not run.is_dir():
        raise pio.ResultError(f"{run} is neither a run folder nor a checkpoint file")
    cfg = pio.read_json(run / "config.json") if (run / "config.json").exists() else None
    ckpts = list_checkpoints(run)
    if step is not None:
        p = ckpt_path(run, step)
        if not p.exists():
            have = [s for s, _ in ckpts]
            raise pio.ResultError(f"{run} has no checkpoint for step {step}"
                                  + (f"; it has {have[0]}..{have[-1]} ({len(have)} steps)" if have else ""))
        return p, cfg, run
    if ckpts:
        return ckpts[-1][1], cfg, run
    if (run / "final.pt").exists():  # a packaged results folder (data/paper/<task>-s0)
        return run / "final.pt", cfg, run
    raise pio.ResultError(f"{run} has no checkpoints (checkpoints/step_*.pt) and no final.pt")


def word_tokenizer(vocab):
    """A ``PreTrainedTokenizerFast`` with exactly the ids of a :class:`posym.tasks.Vocab` (no special tokens added)."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import WhitespaceSplit
    from transformers import PreTrainedTokenizerFast

    pad = vocab.tokens[0]
    tok = Tokenizer(WordLevel({t: i for i, t in enumerate(vocab.tokens)}, unk_token=pad))
    tok.pre_tokenizer = WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=pad, unk_token=pad, model_max_length=N_POSITIONS)


def export_hf(run: str | Path, out: str | Path | None = None, step: int | None = None, task: str | None = None,
              n_positions: int = N_POSITIONS) -> Path:
    """Write the checkpoint of ``run`` (final, or ``step``) as a ``GPTJForCausalLM`` folder; returns it."""
    from .hf import to_hf
    from .tasks import get_task
    from .train import load_checkpoint

    ckpt, run_cfg, folder = _locate(run, step)
    expect = run_cfg.get("config_hash") if run_cfg else None
    model, obj = load_checkpoint(ckpt, expect_hash=expect)
    mc = model.cfg
    if mc.rope_base != 10000.0:
        raise ValueError(f"GPT-J in transformers uses RoPE base 10000; this model has {mc.rope_base}")
    if mc.max_seq_len is not None:
        n_positions = min(n_positions, mc.max_seq_len)
    train_cfg = (run_cfg or {}).get("train", {})
    task = task or train_cfg.get("task")
    if task is None:
        raise ValueError(f"cannot tell the task of {ckpt} (no config.json next to it): pass --task")
    vocab = get_task(task).vocab
    if len(vocab) != mc.vocab_size:
        raise ValueError(f"task {task!r} has {len(vocab)} tokens but the model's vocabulary has {mc.vocab_size}")

    out = Path(out) if out is not None else Path(folder) / "hf"
    hf = to_hf(model, n_positions=n_positions)
    hf.config.posym_task = task
    out.mkdir(parents=True, exist_ok=True)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf.save_pretrained(out, safe_serialization=True)
    word_tokenizer(vocab).save_pretrained(out)
    step_no = obj.get("step")
    info = {"source": str(Path(ckpt).resolve()), "source_sha256": pio.sha256_file(ckpt), "step": step_no,
            "task": task, "seed": train_cfg.get("seed"), "config_hash": obj.get("config_hash"),
            "model_config": mc.to_dict(), "posym": pio.package_versions().get("posym"),
            "git_commit": pio.git_commit()}
    pio.atomic_write_json(out / "posym.json", info)
    example = get_task(task)
    pio.atomic_write_text(out / "README.md", _readme(task, step_no, train_cfg, mc, n_positions, out.name, example))
    return out


def _readme(task, step, train_cfg, mc, n_positions, name, task_obj) -> str:
    from .tasks import balanced_eval_set

    s = balanced_eval_set(task_obj, 4, seed=0, split="test")[0]
    prompt = " ".join(s.tokens)
    return f"""# posym `{task}` model ({name})

A GPT-J-style Transformer trained from scratch by [posym](https://github.com/posym/posym) on the
**{task}** task of Urrutia et al., *Positional versus Symbolic Attention Heads* (arXiv:2605.31558):
{mc.n_layer} layers x {mc.n_head} head, d_model {mc.d_model}, MLP {mc.d_mlp}, RoPE on {mc.rotary_dim} dims
(base 10000). Checkpoint step: {step}; training seed: {train_cfg.get('seed')}; {train_cfg.get('steps')} steps.
Provenance (source checkpoint, sha256, config hash, commit): `posym.json`.

The model reads the 17 prompt tokens and predicts the answer as the next token (only the last
position was trained). Tokens are separated by spaces; `tokenizer.json` maps each to its id.

```python
from transformers import AutoTokenizer, GPTJForCausalLM

model = GPTJForCausalLM.from_pretrained("{name}").eval()
tok = AutoTokenizer.from_pretrained("{name}")
ids = tok("{prompt}", return_tensors="pt").input_ids
print(tok.decode(model(ids).logits[0, -1].argmax()))   # expected: {s.answer}
```

RoPE tables are precomputed up to `n_positions` = {n_positions} tokens. Back in posym:
`posym import-hf {name} --out model.pt`, then `posym.train.load_checkpoint("model.pt")`.
"""


def import_hf(folder: str | Path, out: str | Path) -> Path:
    """Read a ``GPTJForCausalLM`` folder (e.g. one written by :func:`export_hf`) into a posym checkpoint file."""
    import torch
    from transformers import GPTJForCausalLM

    from .hf import from_hf_state_dict
    from .model import GPTJ, ModelConfig

    folder = Path(folder)
    hf = GPTJForCausalLM.from_pretrained(folder)
    c = hf.config
    if c.activation_function != "gelu" or getattr(c, "tie_word_embeddings", False):
        raise ValueError(f"{folder}: posym reads untied GPT-J models with exact GELU only (this one has "
                         f"activation {c.activation_function!r}, tie_word_embeddings={c.tie_word_embeddings})")
    mc = ModelConfig(vocab_size=c.vocab_size, n_layer=c.n_layer, n_head=c.n_head, d_model=c.n_embd,
                     d_mlp=c.n_inner or 4 * c.n_embd, rotary_dim=c.rotary_dim if c.rotary_dim is not None else c.n_embd // c.n_head,
                     attn_pdrop=c.attn_pdrop, resid_pdrop=c.resid_pdrop, embd_pdrop=c.embd_pdrop,
                     ln_eps=c.layer_norm_epsilon)
    model = GPTJ(mc)
    sd = {k: v for k, v in from_hf_state_dict(hf.state_dict()).items() if k in model.state_dict()}
    model.load_state_dict(sd, strict=True)
    info = {}
    if (folder / "posym.json").exists():
        info = json.loads((folder / "posym.json").read_text())
    out = Path(out)
    pio.atomic_torch_save(out, {"step": info.get("step"), "config_hash": info.get("config_hash"),
                                "model_config": mc.to_dict(),
                                "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}})
    return out
