"""Preference tuning (issue #13): sample per prompt, score, select pairs, train with DPOP, round after round.

Above generation, training and evaluation, which it uses together: ``selection`` (filters, top and bottom by
score, pairs, the length guard), ``rounds`` (a round's folder: samples, scores, pairs, done marker; resumable).
"""
