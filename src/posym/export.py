"""Export a trained checkpoint as a Hugging Face ``GPTJForCausalLM`` folder (and import one back).

    posym export-hf runs/smoke/number-s0                # final checkpoint -> runs/smoke/number-s0/hf
    posym export-hf data/paper/number-s0 --out number-hf
    posym export-hf runs/paper/letter-s1 --step 3400

The folder holds ``config.json`` + ``model.safetensors`` (written by ``save_pretrained``), a word-level
tokenizer (``tokenizer.json``: one id per task token, split on spaces, exactly :class:`posym.tasks.Vocab`; a
word that is not a token of the task is refused, never mapped to another token), ``posym.json`` (where the
weights came from), a ``README.md`` whose example prompt and answer were computed through transformers from
the written folder, and ``manifest.json`` (checksums). It loads offline with::

    from transformers import AutoTokenizer, GPTJForCausalLM
    model = GPTJForCausalLM.from_pretrained("number-hf")
    tok = AutoTokenizer.from_pretrained("number-hf")
    ids = tok("e 3 ... 7", return_tensors="pt").input_ids   # the 17 prompt tokens
    answer = tok.decode(model(ids).logits[0, -1].argmax())

and gives the same logits as :class:`posym.model.GPTJ` (``tests/test_export.py``). The folder is written
next to ``out`` and renamed into place once complete, so a failed export leaves an earlier one intact.
Models that GPT-J cannot express (no RoPE, a frequency mask, attention-only blocks, another RoPE base) are
refused with one line.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
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


#: The word-level model's unknown token. It is deliberately *not* in the vocabulary: the model was never
#: trained on such a token, so a word outside the task's vocabulary (a typo) makes tokenisation fail
#: ("WordLevel error: Missing [UNK] token from the vocabulary") instead of becoming some other token.
UNK = "<unk>"


def word_tokenizer(vocab):
    """A ``PreTrainedTokenizerFast`` with exactly the ids of a :class:`posym.tasks.Vocab` (no special tokens added)
    that refuses unknown words."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import WhitespaceSplit
    from transformers import PreTrainedTokenizerFast

    pad = vocab.tokens[0]
    assert UNK not in vocab.tokens
    tok = Tokenizer(WordLevel({t: i for i, t in enumerate(vocab.tokens)}, unk_token=UNK))
    tok.pre_tokenizer = WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=pad, model_max_length=N_POSITIONS)


def check_exportable(mc, source) -> None:
    """ValueError (one line, naming ``source``) for a model that ``GPTJForCausalLM`` cannot compute."""
    if mc.rotary_dim == 0:
        raise ValueError(f"{source}: a model without RoPE (rotary_dim 0, NoPE) cannot be written as a "
                         f"GPTJForCausalLM (transformers' GPT-J always rotates; rotary_dim 0 would fail on the first "
                         f"forward pass); use the checkpoint with posym itself")
    if mc.rope_base != 10000.0:
        raise ValueError(f"{source}: GPT-J in transformers uses RoPE base 10000; this model has {mc.rope_base}")
    if mc.freq_mask is not None or mc.attn_only:
        raise ValueError(f"{source}: GPT-J in transformers has no frequency mask or attention-only blocks; "
                         f"this model cannot be exported")


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
    check_exportable(mc, ckpt)
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
    if out.exists() and not (out.is_dir() and ((out / "posym.json").is_file() or not any(out.iterdir()))):
        raise ValueError(f"--out {out} exists and is not a posym export; choose another --out")
    hf = to_hf(model, n_positions=n_positions)
    hf.config.posym_task = task
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf.save_pretrained(tmp, safe_serialization=True)
        word_tokenizer(vocab).save_pretrained(tmp)
        step_no = obj.get("step")
        source = pio.written_entry(ckpt) or {"sha256": pio.sha256_file(ckpt)}
        info = {"source": str(Path(ckpt).resolve()), "source_sha256": source["sha256"], "step": step_no,
                "task": task, "seed": train_cfg.get("seed"), "config_hash": obj.get("config_hash"),
                "model_config": mc.to_dict(), "posym": pio.package_versions().get("posym"),
                "git_commit": pio.git_commit()}
        pio.atomic_write_json(tmp / "posym.json", info)
        example, answer = _read_back(tmp, model, get_task(task))
        pio.atomic_write_text(tmp / "README.md", _readme(task, step_no, train_cfg, mc, n_positions, out.name,
                                                          example, answer))
        entries = {}
        for f in sorted(p.name for p in tmp.iterdir() if p.is_file()):
            os.chmod(tmp / f, pio.FILE_MODE)  # save_pretrained writes some files 0600
            # every file was just written and then read back (the model and tokenizer by _read_back)
            entries[f] = pio.written_entry(tmp / f) or {"sha256": pio.sha256_file(tmp / f),
                                                        "bytes": (tmp / f).stat().st_size}
        pio.write_manifest(tmp, {"what": "posym export-hf", "source": info["source"], "step": step_no},
                           files=sorted(entries), entries=entries)
        os.chmod(tmp, 0o755 & ~pio._UMASK)
        old = None
        if out.exists():
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            out.replace(old)
        tmp.replace(out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def _read_back(folder: Path, model, task_obj):
    """Load the written folder with transformers, check it gives posym's logits on held-out prompts, and
    return one prompt with the answer transformers gives for it."""
    import torch
    from transformers import AutoTokenizer, GPTJForCausalLM

    from .tasks import balanced_eval_set, to_tensors

    hf = GPTJForCausalLM.from_pretrained(folder).eval()
    tok = AutoTokenizer.from_pretrained(folder)
    samples = balanced_eval_set(task_obj, 8, seed=0, split="test")
    x, _, _ = to_tensors(samples, task_obj.vocab)
    ids = tok([" ".join(s.tokens) for s in samples], return_tensors="pt").input_ids
    with torch.no_grad():
        ref, got = model(x)[:, -1], hf(ids).logits[:, -1]
    diff = (ref - got).abs().max().item()
    if not torch.equal(ids, x) or diff > 1e-4 * max(1.0, ref.abs().max().item()):
        raise pio.ResultError(f"{folder}: the written Hugging Face model does not reproduce posym's logits "
                              f"(max difference {diff:.2e}); nothing was exported")
    s = samples[0]
    return s, tok.decode(got[0].argmax())


def _readme(task, step, train_cfg, mc, n_positions, name, s, answer) -> str:
    prompt = " ".join(s.tokens)
    from .results import repo_url

    verdict = "the right answer" if answer == s.answer else f"the task's answer is {s.answer}"
    url = repo_url()
    posym = f"[posym]({url})" if url else "posym"
    return f"""# posym `{task}` model ({name})

A GPT-J-style Transformer trained from scratch by {posym} on the
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
print(tok.decode(model(ids).logits[0, -1].argmax()))   # prints {answer} ({verdict})
```

A word that is not one of the task's tokens is refused by the tokenizer (`WordLevel error: Missing [UNK]
token`), never replaced by another token.

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
    if not folder.is_dir():
        raise ValueError(f"{folder} is not a folder (import-hf reads a Hugging Face model folder)")
    cfg_file = folder / "config.json"
    try:
        model_type = json.loads(cfg_file.read_text()).get("model_type") if cfg_file.is_file() else None
    except (json.JSONDecodeError, AttributeError, UnicodeDecodeError):
        raise pio.ResultError(f"{cfg_file} is not valid JSON; {folder} is not a Hugging Face model folder") from None
    if model_type is None:
        raise ValueError(f"{folder} is not a Hugging Face model folder (no config.json with a model_type)")
    if model_type != "gptj":
        raise ValueError(f"{folder} holds a {model_type!r} model; import-hf reads GPT-J (GPTJForCausalLM) only")
    if not any((folder / w).is_file() for w in ("model.safetensors", "pytorch_model.bin",
                                                 "model.safetensors.index.json", "pytorch_model.bin.index.json")):
        raise ValueError(f"{folder} has no weights (model.safetensors or pytorch_model.bin)")
    try:
        hf = GPTJForCausalLM.from_pretrained(folder)
    except (OSError, ValueError, RuntimeError, KeyError) as e:
        raise pio.ResultError(f"{folder}: transformers cannot load it ({type(e).__name__}: "
                              f"{' '.join(str(e).split())[:300]})") from None
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
                                "task": info.get("task", getattr(c, "posym_task", None)),
                                "model_config": mc.to_dict(),
                                "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}})
    return out
