"""Campaign specs: "compare these activations on these tasks", as checked plain data.

A spec is YAML (see configs/). Everything is checked before anything runs or is written;
an error is one line naming the field path and what is wrong, e.g.
``search.space.lr.low: must be > 0 when log is true``, and an unknown key is refused with
the closest valid key suggested.

Fairness is built in: every activation gets the same trial budget, the same search space
and the same fixed settings; the only extra dimension is an activation's own shape
parameter (the radix of an ERU/ORU written without one, when a ``radix`` range is given).

So is the design of the test (docs/statistics.md): ``compare`` declares the confirmatory
family (the primary metric of each task, each candidate against each reference), and a
spec whose repeat seeds could not reach its alpha over that family, or whose search seed
is also a repeat seed, is refused before anything runs.

The modules: parts (the sub-specs), labels (how activations are named), checks (what needs
the whole spec), campaign (CampaignSpec), loading (parse_spec, load_spec), errors.
"""

from bru_core.spec.campaign import CampaignSpec
from bru_core.spec.errors import SpecError
from bru_core.spec.loading import load_spec, parse_spec
from bru_core.spec.parts import (
    NOT_IN_SPEC,
    SEARCHABLE,
    SHAPE_PARAMETERS,
    TASK_FIELDS,
    CompareSpec,
    Design,
    ParamSpec,
    RepeatSpec,
    SearchSpec,
    TaskSpec,
)

__all__ = [
    "NOT_IN_SPEC",
    "SEARCHABLE",
    "SHAPE_PARAMETERS",
    "TASK_FIELDS",
    "CampaignSpec",
    "CompareSpec",
    "Design",
    "ParamSpec",
    "RepeatSpec",
    "SearchSpec",
    "SpecError",
    "TaskSpec",
    "load_spec",
    "parse_spec",
]
