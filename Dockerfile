# One image for every process (web, GPU workers, beat, Flower); compose picks the command.
FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1 HF_HUB_OFFLINE=1 \
    DJANGO_SETTINGS_MODULE=webapp.settings
WORKDIR /app
RUN apt-get update && apt-get install -y --no-install-recommends gcc libpq5 curl \
    && rm -rf /var/lib/apt/lists/*
COPY requirements.txt requirements-nodeps.txt ./
# For GPUs, install the CUDA build of torch first (e.g. --index-url .../cu124) via TORCH_INDEX.
ARG TORCH_INDEX=""
RUN if [ -n "$TORCH_INDEX" ]; then pip install torch==2.13.0 --index-url "$TORCH_INDEX"; fi \
    && pip install -r requirements.txt \
    && pip install --no-deps -r requirements-nodeps.txt
COPY . .
RUN DEBUG=1 python manage.py collectstatic --noinput
RUN useradd --create-home --uid 1000 app && mkdir -p /data/media /models && chown -R app /data /models
USER app
EXPOSE 8000
CMD ["gunicorn", "webapp.wsgi", "-c", "python:webapp.gunicorn_conf", "-b", "0.0.0.0:8000", "-w", "4", "--threads", "4", "--timeout", "60"]
