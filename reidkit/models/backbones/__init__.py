"""Backbone networks: torchvision-named ResNets (``reidkit.models.backbones.resnet``)."""

from reidkit.models.backbones.resnet import IMAGENET_URLS, ResNet, load_pretrained

__all__ = ["IMAGENET_URLS", "ResNet", "load_pretrained"]
