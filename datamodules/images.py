"""Image loading and the named per-paper image transforms (configs pick one by name).

Every transform takes a PIL RGB image and returns a float32 tensor [3, image_size, image_size]. With
`image_size = S` the crop is S and the resize target is round(S * 256 / 224) (256 for the usual 224).

    name             train                                        eval                          normalisation
    "vgg_mean"       resize shorter side 256, centre crop 224     same                          minus VGG mean pixel
    "davenet_code"   RandomResizedCrop(224)                       resize 256, centre crop 224   ImageNet mean/std
    "davenet_paper"  resize shorter side 256, random 224 crop     resize 256, centre crop 224   ImageNet mean/std
    "resize"         resize to 224 x 224 (whole image, no aug.)   same                          ImageNet mean/std
    "resize_flip"    "resize" + random horizontal flip            "resize"                      ImageNet mean/std

References: `davenet_code` is dharwath/DAVEnet-pytorch `dataloaders/image_caption_dataset.py` (RandomResizedCrop
for training, Resize + CenterCrop for evaluation, torchvision ImageNet normalisation); `davenet_paper` is the ECCV
2018 paper's text ("smallest side to 256, random 224 crop"); `vgg_mean` is the NIPS 2016 / ACL 2017 VGG16 input
(Simonyan & Zisserman's mean-pixel subtraction, no std division).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable

import numpy as np
import torch
from PIL import Image
from torchvision import transforms as T

from .errors import BadSampleError, require_nonempty_file

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# VGG16's mean pixel (RGB, 0..255; Caffe's BGR [103.939, 116.779, 123.68] reversed).
VGG_MEAN_PIXEL = (123.68, 116.779, 103.939)

IMAGE_TRANSFORMS = ("vgg_mean", "davenet_code", "davenet_paper", "resize", "resize_flip")
# Background for transparent pixels when an image with alpha is flattened to RGB.
ALPHA_BACKGROUND = (255, 255, 255)


def _resize_size(image_size: int) -> int:
    return round(image_size * 256 / 224)


def vgg_mean(image_size: int = 224) -> Callable:
    """NIPS 2016 / ACL 2017: shorter side to 256, centre 224 crop (train and eval), subtract the VGG mean pixel.

    Pixels are on torchvision's 0..1 RGB scale (so the mean pixel is divided by 255) and not divided by a std,
    as in the VGG16 recipe. Note that torchvision's VGG16 ImageNet weights were trained with std division as well.
    """
    return T.Compose([
        T.Resize(_resize_size(image_size)),
        T.CenterCrop(image_size),
        T.ToTensor(),
        T.Normalize(mean=[m / 255.0 for m in VGG_MEAN_PIXEL], std=[1.0, 1.0, 1.0]),
    ])


def davenet_code(train: bool, image_size: int = 224) -> Callable:
    """The official DAVEnet code: train RandomResizedCrop(224); eval resize 256 + centre 224; ImageNet mean/std."""
    geometry = (
        [T.RandomResizedCrop(image_size)]
        if train
        else [T.Resize(_resize_size(image_size)), T.CenterCrop(image_size)]
    )
    return T.Compose([*geometry, T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


def davenet_paper(train: bool, image_size: int = 224) -> Callable:
    """The DAVEnet paper text: shorter side to 256, then a random (train) or centre (eval) 224 crop; ImageNet
    mean/std."""
    crop = T.RandomCrop(image_size) if train else T.CenterCrop(image_size)
    return T.Compose([T.Resize(_resize_size(image_size)), crop, T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


def resize(image_size: int = 224) -> Callable:
    """Resize the whole image to image_size x image_size (aspect ratio not kept), ImageNet mean/std, no augmentation.

    For generated data such as SpokenScenes: nothing is cropped, so pixel (y, x) of an object mask of the original
    image maps to (y * image_size / H, x * image_size / W) of the tensor. Same for train and eval.
    """
    return T.Compose([T.Resize((image_size, image_size)), T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


def resize_flip(train: bool, image_size: int = 224) -> Callable:
    """`resize` plus a random horizontal flip in training (evaluation: exactly `resize`).

    For generated scenes whose captions never say left or right, a mirrored image is an equally true pair: a
    free augmentation that keeps every object whole.
    """
    if not train:
        return resize(image_size)
    return T.Compose([T.Resize((image_size, image_size)), T.RandomHorizontalFlip(), T.ToTensor(),
                      T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


def build_image_transform(name: str, train: bool, image_size: int = 224) -> Callable:
    """The named transform (one of IMAGE_TRANSFORMS) for training (`train=True`) or evaluation."""
    if name == "vgg_mean":
        return vgg_mean(image_size)
    if name == "davenet_code":
        return davenet_code(train, image_size)
    if name == "davenet_paper":
        return davenet_paper(train, image_size)
    if name == "resize":
        return resize(image_size)
    if name == "resize_flip":
        return resize_flip(train, image_size)
    raise ValueError(f"unknown image_transform {name!r}; choose one of {list(IMAGE_TRANSFORMS)}")


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any PIL mode to RGB: grayscale, 16-bit grayscale, CMYK, palette, and alpha composited onto white."""
    if img.mode == "RGB":
        return img
    if img.mode.startswith("I;16") or img.mode in ("I", "F"):
        # 16/32-bit grayscale: PIL's own conversion clips at 255 (a near-white image); rescale instead.
        arr = np.asarray(img, dtype=np.float64)
        scale = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        if img.mode == "F" and arr.max() <= 1.0:
            scale = 1.0
        img = Image.fromarray(np.clip(arr / scale * 255.0, 0, 255).round().astype(np.uint8))
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "La", "RGBa", "PA"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, ALPHA_BACKGROUND + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def load_image(path: str | os.PathLike) -> Image.Image:
    """Open and fully decode an image as RGB. Missing, empty, truncated or undecodable files raise BadSampleError."""
    path = os.fspath(path)
    require_nonempty_file("image", path)
    # Truncated files fail here (unless the user set PIL's ImageFile.LOAD_TRUNCATED_IMAGES) instead of half grey.
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                img.load()
                return to_rgb(img)
    except Exception as err:  # UnidentifiedImageError, OSError("image file is truncated"), bombs, ...
        reason = str(err).strip() or type(err).__name__
        raise BadSampleError.for_file("image", path, f"cannot decode image ({reason})") from None


def denormalize(image: torch.Tensor, transform_name: str) -> torch.Tensor:
    """Undo the normalisation of the named transform: [..., 3, H, W] back to 0..1 RGB (for display)."""
    if transform_name == "vgg_mean":
        mean, std = [m / 255.0 for m in VGG_MEAN_PIXEL], [1.0, 1.0, 1.0]
    elif transform_name in IMAGE_TRANSFORMS:
        mean, std = IMAGENET_MEAN, IMAGENET_STD
    else:  # unknown (a custom callable): stretch to 0..1
        lo, hi = image.amin(), image.amax()
        return (image - lo) / (hi - lo).clamp_min(1e-8)
    shape = (3, 1, 1)
    mean_t = torch.tensor(mean, dtype=image.dtype, device=image.device).view(shape)
    std_t = torch.tensor(std, dtype=image.dtype, device=image.device).view(shape)
    return (image * std_t + mean_t).clamp(0, 1)


def image_tensor(path: str | os.PathLike, transform: Callable) -> torch.Tensor:
    """`transform(load_image(path))`."""
    return transform(load_image(path))
