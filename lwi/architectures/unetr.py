"""UNETR (Hatamizadeh et al.), the paper's network: MONAI ``UNETR`` with ViT levels z3, z6, z9, z12."""

from __future__ import annotations

from typing import List

from torch import nn

from lwi.architectures.base import Adapter


class UNETRAdapter(Adapter):
    """Levels: the ViT hidden states reshaped to the 16^3 patch grid, exactly as they enter the decoder
    (inputs of ``encoder2``, ``encoder3``, ``encoder4`` and ``decoder5``). N = roi_z / 16."""

    name = "unetr"
    defaults = {
        "feature_size": 16,
        "hidden_size": 768,
        "mlp_dim": 3072,
        "num_heads": 12,
        "proj_type": "perceptron",  # the paper, the authors and MONAI's UNETR tutorial
        "norm_name": "instance",
        "res_block": True,
        "dropout_rate": 0.0,
        "qkv_bias": False,
    }
    output_prefixes = ("net.out.",)
    encoder_prefixes = ("net.vit.",)  # the ViT; encoder1-4 are the convolutional skip paths of the decoder
    token_patch = 16
    normalise_order_features = True  # its intermediate ViT levels are raw residual streams

    def make_network(self) -> nn.Module:
        from monai.networks.nets import UNETR

        return UNETR(
            self.in_channels, self.out_channels, img_size=self.roi_size, spatial_dims=3, **self.monai_kwargs()
        )

    def token_embedding(self) -> nn.Module:
        return self.net.vit.patch_embedding  # tokens [B, L, hidden] with the position embedding added

    @property
    def token_channels(self) -> int:
        return int(self.params["hidden_size"])

    def register_level_hooks(self) -> None:
        for i, name in enumerate(["encoder2", "encoder3", "encoder4", "decoder5"]):
            self.capture_input(getattr(self.net, name), i)

    @property
    def level_channels(self) -> List[int]:
        return [int(self.params["hidden_size"])] * 4

    @property
    def depth_factor(self) -> int:
        return 16  # MONAI's UNETR uses 16^3 patches
