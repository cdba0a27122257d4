"""STADB: the Self-Thresholding attention guided Adaptive DropBlock network (Wang et al., "Self-Thresholding
attention guided Adaptive DropBlock network for person re-identification", §3): BDB's two-branch network
with its random batch drop replaced, per training iteration, by either the self-thresholding drop or an
attention module (see ``reidkit.models.two_branch``)."""

from __future__ import annotations

import dataclasses

from reidkit.models.two_branch import TwoBranchNet, TwoBranchOptions


@dataclasses.dataclass
class STADBOptions(TwoBranchOptions):
    """Every ``reidkit.models.two_branch.TwoBranchOptions`` switch, plus ``use_sta``: False is the same
    as ``drop="batch_drop"`` (the first row of STADB Table 7)."""

    use_sta: bool = True


class STADB(TwoBranchNet):
    """STADB; options: ``STADBOptions``."""

    name = "stadb"
    Options = STADBOptions
    input_size = (384, 128)

    def structure(self) -> TwoBranchOptions:
        """The two-branch switches: all of STADB's options, ``use_sta=False`` turning the drop into BDB's."""
        fields = {f.name: getattr(self.opts, f.name) for f in dataclasses.fields(TwoBranchOptions)}
        if not self.opts.use_sta:
            fields["drop"] = "batch_drop"
        return TwoBranchOptions(**fields)
