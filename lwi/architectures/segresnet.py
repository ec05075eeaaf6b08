"""SegResNet (Myronenko): MONAI ``SegResNet``; levels are the outputs of its down-sampling stages."""

from __future__ import annotations

from typing import List

from torch import nn

from lwi.architectures.base import Adapter


class SegResNetAdapter(Adapter):
    """Levels: outputs of ``down_layers`` (the skip connections, the last one being the bottleneck
    where decoding starts). N = roi_z / 2^(stages - 1), i.e. roi_z / 8 by default."""

    name = "segresnet"
    defaults = {
        "init_filters": 16,
        "blocks_down": [1, 2, 2, 4],
        "blocks_up": [1, 1, 1],
        "dropout_prob": None,
        "norm": ["GROUP", {"num_groups": 8}],
        "upsample_mode": "nontrainable",
    }
    # Only the last convolution of ``conv_final`` depends on the number of output channels; its
    # normalisation layer is shared by both steps.
    output_prefixes = ("net.conv_final.2.",)
    encoder_prefixes = ("net.convInit.", "net.down_layers.")

    def make_network(self) -> nn.Module:
        from monai.networks.nets import SegResNet

        kwargs = self.monai_kwargs()
        if len(kwargs["blocks_up"]) != len(kwargs["blocks_down"]) - 1:
            raise ValueError("blocks_up needs one entry fewer than blocks_down")
        kwargs["norm"] = tuple(kwargs["norm"]) if isinstance(kwargs["norm"], list) else kwargs["norm"]
        kwargs["blocks_down"] = tuple(kwargs["blocks_down"])
        kwargs["blocks_up"] = tuple(kwargs["blocks_up"])
        return SegResNet(spatial_dims=3, in_channels=self.in_channels, out_channels=self.out_channels, **kwargs)

    def register_level_hooks(self) -> None:
        for i, layer in enumerate(self.net.down_layers):
            self.capture_output(layer, i)

    @property
    def level_channels(self) -> List[int]:
        f = int(self.params["init_filters"])
        return [f * 2**i for i in range(len(self.params["blocks_down"]))]

    @property
    def depth_factor(self) -> int:
        return 2 ** (len(self.params["blocks_down"]) - 1)
