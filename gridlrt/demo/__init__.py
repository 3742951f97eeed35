"""The demo room: synthetic LOFAR observations, the demo run and its plot.

What a new user runs first (``gridlrt demo``, ``make demo``, ``tutorials/LRT_demo.ipynb``);
never shipped to pilots (the runtime bundle of :mod:`gridlrt.sandbox.bundle` leaves this
package out, and nothing under :mod:`gridlrt.worker` imports it).

* :mod:`gridlrt.demo.synthetic_ms` - small but realistic LOFAR HBA measurement sets (also
  what the tests and benchmarks process);
* :mod:`gridlrt.demo.run` - the observation in a local store, its tokens, local pilots, and a
  summary per subband;
* :mod:`gridlrt.demo.plot` - a PNG of a run (matplotlib, a UI-node dependency).

The names below are the demo's API, as the tutorial uses it.
"""

from gridlrt.demo.plot import plot_progress
from gridlrt.demo.run import (
    DemoPlan,
    DemoResult,
    DemoSpec,
    Observation,
    SubbandResult,
    default_workdir,
    demo_tokens,
    make_observation,
    plan_demo,
    run_demo,
    summarize,
)

__all__ = [
    "DemoPlan",
    "DemoResult",
    "DemoSpec",
    "Observation",
    "SubbandResult",
    "default_workdir",
    "demo_tokens",
    "make_observation",
    "plan_demo",
    "plot_progress",
    "run_demo",
    "summarize",
]
