"""posym: positional vs symbolic attention heads, reproduced.

Modules
-------
tasks      tasks as plug-ins: Paper 2's Number and Letter, LEGO chains, list sorting (one module each)
rope       rotary position embeddings (GPT-J interleaved convention)
model      a GPT-J-style decoder with TransformerLens-style hook points
train      the paper's training recipe, with dense checkpoints and resume
metrics    positional / symbolic scores (re-run reference and fast exact version)
analyze    metric trajectories over checkpoints; analyses of final models
longprompts  accuracy and head margins on prompts longer than training (prepended target-window tokens)
trajectory   best step, hop-learning steps, purity events and final classes of a run's checkpoints
runs       the runs behind a chapter at each scale (trained here, or read from data/)
stats      intervals over seeds, Student-t quantiles, Wilson intervals
paper      the values the papers report, read from their figures and tables
spec       chapter specifications: parameters per scale, required results, validation
book       chapter execution: setup, runtimes, papermill
chapters   one module per book page (its parameters, science and figures)
functions  the basic functions Index / Retrieval / Reflexive and depth-wise rewriting
theory     Theorem 3.1 constructions as real RoPE heads; discrepancy and its bounds
results    committed results in data/: packaging with provenance, loading
hf         interoperability with Hugging Face GPTJForCausalLM
io         atomic writes, manifests, provenance
cli        the ``posym`` command line
"""
__version__ = "0.1.0"
