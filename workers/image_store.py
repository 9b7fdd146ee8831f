"""Saving generated images (PNG plus a small thumbnail) to Django's default storage.

That storage is MEDIA_ROOT or, with T2I_STORAGE=s3, the bucket every machine shares (docs/storage.md): the rows
keep the names returned here (``images/<id>.png``, ``thumbs/<id>.png``), which are storage keys, not host paths,
so the web tier serves an image whichever machine's worker saved it.

Every full-size PNG carries its generation parameters in a `parameters` text chunk, in the layout
AUTOMATIC1111 writes and A1111-compatible tools (its PNG Info tab, ComfyUI loaders, image browsers) read:

    <prompt>
    Negative prompt: <negative prompt>
    Steps: 50, Sampler: DDIM, CFG scale: 7.5, Seed: 7, Size: 512x512, Model: sd15, Served K: 25, ...

followed by this system's own fields (the served K′, K*, the request id) as further `Key: value` pairs.
"""

from __future__ import annotations

import io
import uuid
from dataclasses import dataclass

from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from PIL import Image, PngImagePlugin

THUMBNAIL_SIZE = 256
SAMPLER_NAMES = {"ddim": "DDIM", "euler": "Euler"}  # our scheduler names → A1111's sampler names


@dataclass(frozen=True)
class ImageParameters:
    """What made one image, as written into its PNG."""

    request_id: uuid.UUID
    prompt: str
    negative_prompt: str
    steps: int
    sampler: str
    guidance_scale: float
    seed: int
    width: int
    height: int
    model: str
    k_served: int
    k_star: int | None = None


def _value(text: object) -> str:
    """A1111 quotes a value that would break its `Key: value, …` parsing (a comma, colon or quote)."""
    text = str(text).replace("\n", " ")
    if any(c in text for c in ',:"'):
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return text


def parameters_text(p: ImageParameters) -> str:
    """The A1111 `parameters` text of an image."""
    lines = [p.prompt]
    if p.negative_prompt:
        lines.append(f"Negative prompt: {p.negative_prompt}")
    fields = {
        "Steps": p.steps,
        "Sampler": SAMPLER_NAMES.get(p.sampler, p.sampler),
        "CFG scale": f"{p.guidance_scale:g}",
        "Seed": p.seed,
        "Size": f"{p.width}x{p.height}",
        "Model": p.model,
        # Approximate caching: the first K′ steps were reused from a similar earlier prompt's latent.
        "Served K": p.k_served,
        "K star": "" if p.k_star is None else p.k_star,
        "Request id": p.request_id,
    }
    lines.append(", ".join(f"{key}: {_value(value)}" for key, value in fields.items() if value != ""))
    return "\n".join(lines)


def _png_bytes(image: Image.Image, parameters: str | None = None) -> bytes:
    info = None
    if parameters is not None:
        info = PngImagePlugin.PngInfo()
        info.add_text("parameters", parameters)  # tEXt as A1111 writes it; PIL makes it iTXt (UTF-8) if it must
    buf = io.BytesIO()
    image.save(buf, format="PNG", pnginfo=info)
    return buf.getvalue()


def save_image(request_id: uuid.UUID, image: Image.Image, parameters: ImageParameters | None = None) -> tuple[str, str]:
    """Store the image (with its parameters, if given) and its thumbnail; return their storage names."""
    text = parameters_text(parameters) if parameters is not None else None
    image_name = default_storage.save(f"images/{request_id}.png", ContentFile(_png_bytes(image, text)))
    thumb = image.copy()
    if max(thumb.size) > THUMBNAIL_SIZE:
        thumb.thumbnail((THUMBNAIL_SIZE, THUMBNAIL_SIZE))
    thumb_name = default_storage.save(f"thumbs/{request_id}.png", ContentFile(_png_bytes(thumb)))
    return image_name, thumb_name


def delete_image(*names: str) -> None:
    """Remove stored files (an image saved for a row that ended meanwhile)."""
    for name in names:
        if name:
            default_storage.delete(name)
