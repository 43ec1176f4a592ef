# syntax=docker/dockerfile:1
# Strata's container image: the `strata` command as the entrypoint, run by an unprivileged
# user, with /data (WAL, upload queue, compactor work space) as a volume.
#
#   docker build -t localhost/strata:0.1.0 .          (or: podman build -t ... .)
#   docker run -p 127.0.0.1:9201:9201 -v strata-data:/data localhost/strata:0.1.0
#
# Checked without Docker by tests/deploy/test_image.py: the build context holds what the
# COPY lines name, and a wheel built from that context installs and runs `strata`.

# Python 3.11 on Debian 12 (bookworm): the Python and the Debian release Strata is tested
# on. The tag is pinned to that minor release and that Debian release; it still moves with
# Python's patch releases and Debian's security updates, which a rebuild should pick up.
# For a reproducible build, pin the digest you have checked as well:
#   docker buildx imagetools inspect python:3.11-slim-bookworm     (prints the digest)
#   docker build --build-arg PYTHON_IMAGE=python:3.11-slim-bookworm@sha256:<digest> .
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS wheels
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
WORKDIR /src
COPY pyproject.toml README.md ./
COPY proto/ proto/
COPY blocks/ blocks/
COPY gateway/ gateway/
COPY querier/ querier/
COPY compactor/ compactor/
# Strata and every dependency as wheels: the runtime stage then installs from this
# directory alone, with no compiler and no package index.
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM ${PYTHON_IMAGE}
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
# A fixed uid/gid, so that Kubernetes' runAsUser/fsGroup and a host's volume ownership
# can name it. /data belongs to it: a new named volume copies that ownership.
RUN groupadd --system --gid 10001 strata \
 && useradd --system --uid 10001 --gid 10001 --home-dir /data --no-create-home \
      --shell /usr/sbin/nologin strata \
 && mkdir /data && chown 10001:10001 /data
# The wheels are bind-mounted from the first stage rather than copied, so they never
# become a layer of the image.
RUN --mount=type=bind,from=wheels,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links /wheels strata

USER 10001:10001
WORKDIR /data
VOLUME ["/data"]
# 9201: `strata serve` and `strata query`; 9202: /metrics of `strata compact --loop`.
EXPOSE 9201 9202
ENTRYPOINT ["strata"]
CMD ["serve", "--listen", "0.0.0.0:9201", "--data-dir", "/data"]
