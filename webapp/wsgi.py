import os
import threading

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
application = get_wsgi_application()


def _warm_up() -> None:
    """Load the prompt embedder and tokenizer now, not inside the first user's request."""
    from scheduler.embeddings import embed_texts
    from webapp.serving.prompt_tokens import count_tokens

    count_tokens("warm up")
    embed_texts(["warm up"])


if os.environ.get("T2I_WARM_UP", "1") == "1":
    threading.Thread(target=_warm_up, name="warm-up", daemon=True).start()
