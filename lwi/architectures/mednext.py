"""MedNeXt (Roy et al.): MONAI ``MedNeXt``; levels are the four encoder stages and the bottleneck."""

from __future__ import annotations

from typing import List

from torch import nn

from lwi.architectures.base import Adapter


class MedNeXtAdapter(Adapter):
    """Levels: outputs of ``enc_stages[0..3]`` (the skip connections) and of ``bottleneck``.
    N = roi_z / 16. Deep supervision is off so the network returns one tensor."""

    name = "mednext"
    defaults = {
        "init_filters": 32,
        "encoder_expansion_ratio": 2,
        "decoder_expansion_ratio": 2,
        "bottleneck_expansion_ratio": 2,
        "kernel_size": 3,
        "use_residual_connection": True,
        "blocks_down": [2, 2, 2, 2],
        "blocks_bottleneck": 2,
        "blocks_up": [2, 2, 2, 2],
        "norm_type": "group",
        "global_resp_norm": False,
    }
    fixed = {"deep_supervision": False}
    output_prefixes = ("net.out_0.",)
    encoder_prefixes = ("net.stem.", "net.enc_stages.", "net.down_blocks.", "net.bottleneck.")

    def make_network(self) -> nn.Module:
        from monai.networks.nets import MedNeXt

        if len(self.params["blocks_up"]) != len(self.params["blocks_down"]):
            raise ValueError("blocks_up needs as many entries as blocks_down")
        return MedNeXt(
            spatial_dims=3, in_channels=self.in_channels, out_channels=self.out_channels, **self.monai_kwargs()
        )

    def register_level_hooks(self) -> None:
        for i, stage in enumerate(self.net.enc_stages):
            self.capture_output(stage, i)
        self.capture_output(self.net.bottleneck, len(self.net.enc_stages))

    @property
    def level_channels(self) -> List[int]:
        f = int(self.params["init_filters"])
        return [f * 2**i for i in range(len(self.params["blocks_down"]) + 1)]

    @property
    def depth_factor(self) -> int:
        return 2 ** len(self.params["blocks_down"])
