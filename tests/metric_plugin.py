"""A metric plugin, whole: one module a third party would publish (``tests/test_metric_plugin.py``
installs it as a distribution and checks that runs, tables and tuning all read its declaration).

The mean rank of the chosen music among the protocol's candidates, ties in expectation, a positive
outside the top K counted at K + 1: lower is better, and it has no upper bound but K + 1.
"""

import numpy as np

from benchkit import hookimpl
from benchkit.interfaces import Metric


class MeanRank(Metric):
    name, label = "mean_rank", "MeanRank"
    description = "weighted mean rank of the positive among its candidates (K + 1 past the top K)"
    higher_is_better = False
    bounds = None

    def __call__(self, ranks, k):
        expected = ranks.n_greater + (ranks.n_equal + 1) / 2  # 1 = first, ties in expectation
        return float(np.dot(ranks.weights, np.minimum(expected, k + 1)))


@hookimpl
def register_metrics(register):
    register(MeanRank())
