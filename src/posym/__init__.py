"""posym: positional vs symbolic attention heads, reproduced.

Modules
-------
tasks      the Number and Letter multi-hop tasks of Urrutia et al. (2026)
rope       rotary position embeddings (GPT-J interleaved convention)
model      a GPT-J-style decoder with TransformerLens-style hook points
train      the paper's training recipe, with dense checkpoints and resume
metrics    positional / symbolic scores (re-run reference and fast exact version)
analyze    metric trajectories over checkpoints; analyses of final models
lengthgen  accuracy vs input length (prepended target-window tokens)
functions  the basic functions Index / Retrieval / Reflexive and depth-wise rewriting
theory     Theorem 3.1 constructions as real RoPE heads; discrepancy and its bounds
results    committed results in data/: packaging with provenance, loading
hf         interoperability with Hugging Face GPTJForCausalLM
io         atomic writes, manifests, provenance
cli        the ``posym`` command line
"""
__version__ = "0.1.0"
