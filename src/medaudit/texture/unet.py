"""The segmentation network of the texture half: MONAI's 3D U-Net as medaudit builds it, and
sliding-window inference with the model's own input normalisation."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from medaudit.texture.preprocess import normalise_input


def build_model(
    n_classes: int,
    channels: Sequence[int],
    num_res_units: int = 1,
    dropout: float = 0.0,
    input_norm: str = "none",
) -> torch.nn.Module:
    """MONAI 3D ``UNet`` (instance norm), one input channel; ``model.input_norm`` is its pre-processing."""
    from monai.networks.nets import UNet

    ch = tuple(int(c) for c in channels)
    model = UNet(
        spatial_dims=3,
        in_channels=1,
        out_channels=n_classes,
        channels=ch,
        strides=(2,) * (len(ch) - 1),
        num_res_units=num_res_units,
        dropout=dropout,
    )
    model.input_norm = input_norm
    return model


def sliding_window_predict(
    model: torch.nn.Module,
    image: torch.Tensor,
    roi_size: Sequence[int],
    device: torch.device,
    sw_batch_size: int = 2,
    amp: bool = True,
) -> torch.Tensor:
    """Arg-max labels ``(D,H,W)`` int64 for an image ``(1,D,H,W)`` with sliding-window inference."""
    from monai.inferers import sliding_window_inference

    model.eval()
    norm = str(getattr(model, "input_norm", "none"))
    predictor = model if norm == "none" else (lambda w: model(normalise_input(w, norm)))
    with torch.no_grad(), torch.autocast(device_type=device.type, enabled=amp and device.type == "cuda"):
        logits = sliding_window_inference(
            image[None].to(device),
            tuple(int(r) for r in roi_size),
            sw_batch_size,
            predictor,
            overlap=0.25,
            mode="gaussian",
        )
    return logits.argmax(1)[0].to("cpu")
