"""Backbones: networks that families build from a size dataclass. Parameters and forward passes only.

    BACKBONES[name] = (module class, config dataclass)
    vit   ViT classifier                  forward(x (B, C, H, W)) -> logits (B, K)
    dit   DiT denoiser (adaLN-Zero)       forward(x (B, C, H, W), c_noise (B,), y=None) -> (B, C_out, H, W)
    unet  ADM-style UNet denoiser         forward(x (B, C, H, W), c_noise (B,), y=None) -> (B, C_out, H, W)
    text  transformer over token ids      see unigen.models.text
    rnn   recurrent LM (LSTM / GRU / RNN) over token ids, same calls as text (see unigen.models.rnn)
Each module also has size presets: `vit_config`, `dit_config`, `unet_config`, `text_config`.
"""
from unigen.models.dit import DiT, DiTConfig, dit_config
from unigen.models.rnn import RecurrentLM, RecurrentLMConfig
from unigen.models.text import TextTransformer, TextTransformerConfig
from unigen.models.unet import UNet, UNetConfig, unet_config
from unigen.models.vit import ViT, ViTConfig, vit_config

BACKBONES = {
    "vit": (ViT, ViTConfig),
    "dit": (DiT, DiTConfig),
    "unet": (UNet, UNetConfig),
    "text": (TextTransformer, TextTransformerConfig),
    "rnn": (RecurrentLM, RecurrentLMConfig),
}

__all__ = ["BACKBONES", "DiT", "DiTConfig", "TextTransformer", "TextTransformerConfig", "UNet", "UNetConfig", "ViT",
           "ViTConfig", "dit_config", "unet_config", "vit_config"]
__all__ += ["RecurrentLM", "RecurrentLMConfig"]
