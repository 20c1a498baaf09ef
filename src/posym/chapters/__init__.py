"""Parameter specifications of the book's chapters, one module per chapter.

Each module calls :func:`posym.book.register` with a :class:`posym.book.ChapterSpec`; importing
:mod:`posym.book` imports them all, so ``posym.book.CHAPTERS`` always holds every chapter. Keeping
one module per chapter lets chapters be written independently.
"""
import importlib
import pkgutil

for _m in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    importlib.import_module(f"{__name__}.{_m}")
