"""The demo room: synthetic LOFAR observations, the demo runs, their checks and plots.

What a new user runs first (``gridlrt demo``, ``make demo``, ``tutorials/LRT_demo.ipynb``);
never shipped to pilots (the runtime bundle of :mod:`gridlrt.sandbox.bundle` leaves this
package out, and nothing under :mod:`gridlrt.worker` imports it).

* :mod:`gridlrt.demo.synthetic_ms` - small but realistic LOFAR HBA measurement sets (also
  what the tests and benchmarks process);
* :mod:`gridlrt.demo.observations` - the reduction's calibrator and target observations, the
  same station gains in both, and the truth they were made from;
* :mod:`gridlrt.demo.reduction` - the main job: the cal-target pipeline on those observations
  with local pilots, its results measured;
* :mod:`gridlrt.demo.verify` - the results against the truth, per station and per source;
* :mod:`gridlrt.demo.run` - the single-step demo: one observation, one step, a summary per
  subband;
* :mod:`gridlrt.demo.plot` - PNGs of runs, solutions and images (matplotlib, a UI-node
  dependency).

The names below are the demo's API, as the tutorial uses it.
"""

from gridlrt.demo.observations import (
    Observations,
    ReductionSpec,
    Truth,
    make_observations,
    make_truth,
)
from gridlrt.demo.plot import plot_images, plot_progress, plot_solutions, plot_stage_progress
from gridlrt.demo.reduction import (
    ReductionPlan,
    ReductionProgress,
    ReductionResult,
    plan_reduction,
    run_reduction,
)
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
from gridlrt.demo.verify import Verification, verify

__all__ = [
    "DemoPlan",
    "DemoResult",
    "DemoSpec",
    "Observation",
    "Observations",
    "ReductionPlan",
    "ReductionProgress",
    "ReductionResult",
    "ReductionSpec",
    "SubbandResult",
    "Truth",
    "Verification",
    "default_workdir",
    "demo_tokens",
    "make_observation",
    "make_observations",
    "make_truth",
    "plan_demo",
    "plan_reduction",
    "plot_images",
    "plot_progress",
    "plot_solutions",
    "plot_stage_progress",
    "run_demo",
    "run_reduction",
    "summarize",
    "verify",
]
