"""SwinUNETR (Hatamizadeh et al.): MONAI ``SwinUNETR`` with the Swin encoder's five hidden states as levels."""

from __future__ import annotations

from typing import List

from torch import nn

from lwi.architectures.base import Adapter


class SwinUNETRAdapter(Adapter):
    """Levels: the five ``swinViT`` outputs (strides 2 to 32), all of which feed the decoder; their depths
    are multiples of N = roi_z / 32 (the stage-4 bottleneck). MONAI requires every ROI axis to be a multiple
    of 32."""

    name = "swinunetr"
    defaults = {
        "feature_size": 48,
        "depths": [2, 2, 2, 2],
        "num_heads": [3, 6, 12, 24],
        "window_size": 7,
        "norm_name": "instance",
        "drop_rate": 0.0,
        "attn_drop_rate": 0.0,
        "dropout_path_rate": 0.0,
        "use_checkpoint": False,
        "use_v2": False,
    }
    fixed = {"patch_size": 2}
    output_prefixes = ("net.out.",)
    encoder_prefixes = ("net.swinViT.",)
    token_patch = 2

    def make_network(self) -> nn.Module:
        from monai.networks.nets import SwinUNETR

        return SwinUNETR(
            in_channels=self.in_channels, out_channels=self.out_channels, spatial_dims=3, **self.monai_kwargs()
        )

    def token_embedding(self) -> nn.Module:
        return self.net.swinViT.patch_embed  # tokens [B, feature_size, gx, gy, gz] (no absolute positions)

    @property
    def token_channels(self) -> int:
        return int(self.params["feature_size"])

    def register_level_hooks(self) -> None:
        self.capture_output(self.net.swinViT, 0)

    @property
    def level_channels(self) -> List[int]:
        f = int(self.params["feature_size"])
        return [f, 2 * f, 4 * f, 8 * f, 16 * f]

    @property
    def depth_factor(self) -> int:
        return 32  # patch embedding (2) then four patch mergings (2 each)
