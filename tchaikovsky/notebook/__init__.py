"""The notebook layer: the notebooks' stages over one run directory (``pipeline``), their parameter contract
(``params``), the headless runner (``runner``, ``python -m tchaikovsky.notebook``) and Kaggle/Colab packaging
(``kaggle``)."""
