# The clock as an image: the package and its runtime dependencies (requirements.txt's pins), your schedule.yaml
# and jobs/, run as a non-root user. Build and run:
#   docker build -t myapp-clock .
#   docker run --rm -e DATABASE_URL=postgres://... --stop-timeout 35 myapp-clock          # = dynoclock run
#   docker run --rm myapp-clock check                                                     # any command
# Another schedule without rebuilding: -v "$PWD/schedule.yaml:/app/schedule.yaml:ro".
# The stop timeout must exceed shutdown_grace (25 s by default) plus a few seconds; Docker's default is 10 s.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# IANA zones from the OS (the tzdata package on PyPI is a fallback); nothing else from apt.
RUN apt-get update \
    && apt-get install -y --no-install-recommends tzdata \
    && rm -rf /var/lib/apt/lists/*

# The package alone, from this checkout, at this repo's lock; no test or lint dependencies.
COPY pyproject.toml README.md requirements.txt /src/
COPY dynoclock /src/dynoclock
RUN pip install -r /src/requirements.txt /src && rm -rf /src

RUN useradd --create-home --uid 10001 --user-group clock \
    && mkdir -p /app/state \
    && chown clock:clock /app /app/state
WORKDIR /app
# python: jobs import from the schedule's folder, so jobs/ goes beside it.
COPY --chown=clock:clock schedule.yaml ./
COPY --chown=clock:clock jobs ./jobs
USER clock

ENTRYPOINT ["dynoclock"]
CMD ["run"]
