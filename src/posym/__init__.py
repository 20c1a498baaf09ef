"""posym: positional vs symbolic attention heads, reproduced.

Modules
-------
tasks      the Number and Letter multi-hop tasks of Urrutia et al. (2026)
rope       rotary position embeddings (GPT-J interleaved convention)
model      a GPT-J-style decoder with TransformerLens-style hook points
train      the paper's training recipe, with dense checkpoints and resume
metrics    positional / symbolic scores (re-run reference and fast exact version)
cli        the ``posym`` command line
"""
__version__ = "0.1.0"
