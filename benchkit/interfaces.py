"""The contracts between the harness and its plugins, in one import for a plugin's author.

The harness (training loop, evaluation, CLI) only ever talks to these types; every method is a
plugin that fills them in. They live on the ground floor, :mod:`benchkit.contracts`, which imports
nothing of benchkit above it; this module names them for plugins:
``from benchkit import interfaces as bk`` and then ``class Mine(bk.Backbone)``.

Conventions: a training batch holds B matched pairs; pair i is video i with its music i. The
in-batch score matrix is ``S[i, j] = score(video_i, music_j)`` (rows are videos).
"""

from benchkit.contracts import methods, metrics, params, protocol, run, values
from benchkit.contracts.methods import *  # noqa: F403
from benchkit.contracts.metrics import *  # noqa: F403
from benchkit.contracts.params import *  # noqa: F403
from benchkit.contracts.protocol import *  # noqa: F403
from benchkit.contracts.run import *  # noqa: F403
from benchkit.contracts.values import *  # noqa: F403

__all__ = [*values.__all__, *params.__all__, *methods.__all__, *metrics.__all__]
__all__ += [*protocol.__all__, *run.__all__]
