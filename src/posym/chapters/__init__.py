"""One module per book page: ``posym/chapters/<name>.py`` belongs to ``book/<name>.md``.

A chapter module registers its :class:`posym.spec.ChapterSpec` when imported and holds the page's
science and figures. Chapter modules import pipeline modules only, never each other;
:func:`posym.book.load_spec` imports the one a page asks for.
"""
