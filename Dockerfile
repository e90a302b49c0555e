# gradwire under torchrun. The CUDA runtime image lets the same image use NCCL on GPU hosts
# and gloo on CPU hosts; torch brings its own CUDA libraries from the package index.
FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04

# Distribution packages float with the base image's release; the base image tag is the pin.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv python3-pip iproute2 \
    && rm -rf /var/lib/apt/lists/*

RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY models ./models
COPY train ./train
COPY launch ./launch
RUN pip install --no-cache-dir .

# Runs write under /runs; mount a volume there to keep them.
WORKDIR /runs
ENV NPROC_PER_NODE=1
ENTRYPOINT ["/bin/sh", "-c", "exec torchrun --standalone --nproc-per-node=\"$NPROC_PER_NODE\" -m train \"$@\"", "--"]
CMD ["--recipe", "mlp"]
