"""Saving generated images (PNG plus a small thumbnail) to Django's media storage."""

from __future__ import annotations

import io
import uuid

from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from PIL import Image

THUMBNAIL_SIZE = 256


def _png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def save_image(request_id: uuid.UUID, image: Image.Image) -> tuple[str, str]:
    """Store the image and its thumbnail; return their storage names."""
    image_name = default_storage.save(f"images/{request_id}.png", ContentFile(_png_bytes(image)))
    thumb = image.copy()
    if max(thumb.size) > THUMBNAIL_SIZE:
        thumb.thumbnail((THUMBNAIL_SIZE, THUMBNAIL_SIZE))
    thumb_name = default_storage.save(f"thumbs/{request_id}.png", ContentFile(_png_bytes(thumb)))
    return image_name, thumb_name
