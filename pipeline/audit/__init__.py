"""The ranking audit: does the supernet order architectures as training them alone would?

- :mod:`.choose`: which architectures are trained stand-alone (K spread over the cost span of
  what the search evaluated, plus the mandatory ones) and the comparison networks at each
  fine-tune budget (a random architecture, the nearest-cost uniform HRNet-like one);
- :mod:`.stats`: rank correlations with bootstrap intervals, top-k overlap, seed repeatability,
  margins of the searched picks;
- :mod:`.ranking`: the ``ranking.json`` document and its table;
- :mod:`.figure`: the scatter figure (inherited vs stand-alone score, cost as colour).
"""
