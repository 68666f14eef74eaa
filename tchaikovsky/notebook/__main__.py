"""``python -m tchaikovsky.notebook``: run the notebooks headless (see ``runner``)."""

from tchaikovsky.notebook.runner import main

main()
