import os
import threading

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
application = get_wsgi_application()


def _warm_up() -> None:
    """Load the prompt embedder and tokenizer now, not inside the first user's request."""
    from scheduler.embedding_batcher import embed_prompt
    from webapp.serving.prompt_tokens import count_tokens

    count_tokens("warm up")
    embed_prompt("warm up")


# Before this process serves anything (gunicorn loads the application before its worker accepts): a request
# arriving during a (re)start waits in the listen backlog and is timestamped once it can be served, instead
# of being accepted with an arrival time it could never make up (a killed web tier restarting under load).
# T2I_WARM_UP=background loads in a thread instead (faster start, first requests wait inside the app).
_WARM_UP = os.environ.get("T2I_WARM_UP", "1")
if _WARM_UP == "1":
    _warm_up()
elif _WARM_UP == "background":
    threading.Thread(target=_warm_up, name="warm-up", daemon=True).start()
