"""The three scales every chapter and every run comes in (no dependencies: the command line imports it).

What a scale means is decided in few places: the training presets (:meth:`posym.train.TrainConfig.preset`),
the analysis parameters of a plan (:data:`posym.reproduce.ANALYSIS`), the runs a chapter trains or reads
(:mod:`posym.runs`) and each chapter's parameter defaults (its ``ChapterSpec``).
"""
SCALES = ("smoke", "teaching", "paper")
SCALE_HELP = {
    "smoke": "fast, for CI and a first look (the whole book in minutes on 2 CPU cores)",
    "teaching": "for a class on a laptop (about 5 minutes per training chapter on CPU)",
    "paper": "the paper's scale; reads committed full-scale results from data/ and trains nothing long",
}
