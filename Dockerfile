# syntax=docker/dockerfile:1
#
# The driftstream image: `docker build -t driftstream .` from the repository root.
#
# Two stages. `build` turns the source into wheels (driftstream's own and those of
# its pinned dependencies, which all ship manylinux wheels). driftstream's own
# wheel holds streamer._native, compiled by maturin from the Rust crate in native/,
# so this stage has a Rust toolchain (copied from the official rust image of the
# same Debian release) and Debian's C compiler, which rustc links with. The final
# stage installs only those wheels into a clean copy of the same base, so no
# source tree, compiler, build tool or pip cache ends up in it.
#
# The base is pinned by its full tag (Python patch release and Debian release).
# A digest pin (python:3.11.14-slim-bookworm@sha256:...) is stronger, but the
# digest can only be read from the registry, which this repository's CI cannot
# reach; add it where you build the image (`docker buildx imagetools inspect
# python:3.11.14-slim-bookworm` prints it) and bump tag and digest together. The
# same holds for the rust image below; keep its Rust version the one native/ is
# developed with, and its Debian release the base's.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS build

# rustup's toolchain (cargo, rustc) as the rust image installs it.
COPY --from=rust:1.95.0-slim-bookworm /usr/local/cargo /usr/local/cargo
COPY --from=rust:1.95.0-slim-bookworm /usr/local/rustup /usr/local/rustup

# rustc links through cc against glibc's development files; the slim base has
# neither, so this installs what the rust image has for it: gcc and libc6-dev.
# Unpinned: Debian's archive keeps only the newest build of a package, so a pin
# would break at the next point release; nothing of this reaches the final stage.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*

# MATURIN_PEP517_ARGS=--locked: cargo builds the crate versions native/Cargo.lock
# pins, and fails instead of resolving new ones when the lock file is stale.
ENV CARGO_HOME=/usr/local/cargo \
    RUSTUP_HOME=/usr/local/rustup \
    PATH=/usr/local/cargo/bin:$PATH \
    MATURIN_PEP517_ARGS=--locked \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src
# pyproject.toml names README.md as the package's readme, so the build needs it.
COPY pyproject.toml README.md ./
COPY native ./native
COPY streamer ./streamer
RUN python -m pip wheel --no-cache-dir --wheel-dir /wheels .


FROM ${PYTHON_IMAGE}

ARG UID=10001
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

LABEL org.opencontainers.image.title="driftstream" \
      org.opencontainers.image.description="Streaming log-loss monitoring of ML models on Kafka, exported to Prometheus." \
      org.opencontainers.image.licenses="Apache-2.0"

# Install from the build stage's wheels only (--no-index: nothing is fetched
# here; the wheel file pins driftstream, pyproject.toml its dependencies), then
# remove pip and setuptools: the running service needs neither.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    python -m pip install --no-cache-dir --no-index --find-links=/wheels \
       /wheels/driftstream-*.whl \
    && python -m pip uninstall --yes setuptools wheel pip \
    && groupadd --system --gid "${UID}" driftstream \
    && useradd --system --uid "${UID}" --gid "${UID}" --no-create-home \
       --home-dir /var/lib/driftstream --shell /usr/sbin/nologin driftstream \
    && install --directory --owner="${UID}" --group="${UID}" --mode=0750 \
       /var/lib/driftstream

# A default configuration that sets nothing, so `docker run -e
# DRIFTSTREAM__KAFKA__BOOTSTRAP_SERVERS=...` works without a file. The Helm chart
# and docker-compose.yml mount their own file over it.
COPY --chmod=0644 <<'EOF' /etc/driftstream/config.yaml
# driftstream configuration: every key is optional. See the README's
# configuration reference; DRIFTSTREAM__SECTION__KEY variables override it.
{}
EOF

# State written relative to the working directory (state.directory) lands in
# the one directory the service user owns.
WORKDIR /var/lib/driftstream
USER ${UID}:${UID}

EXPOSE 9308

# /healthz answers 200 while the process runs. The image has no curl, so the
# check uses Python's urllib; it follows DRIFTSTREAM__METRICS__PORT when set.
# Kubernetes ignores HEALTHCHECK and uses the chart's probes instead.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('DRIFTSTREAM__METRICS__PORT', '9308'), timeout=4)"]

ENTRYPOINT ["driftstream"]
CMD ["run", "--config", "/etc/driftstream/config.yaml"]
