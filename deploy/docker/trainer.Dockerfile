# The trainer (and in-process judge) for CPU or GPU hosts. On a TPU VM use
# deploy/tpu-vm/install.sh instead: it adds jax's TPU runtime.
#   docker build -f deploy/docker/trainer.Dockerfile -t grar-trainer .
#   docker run -v $PWD/runs:/opt/grar/runs grar-trainer train --config configs/cpu-tiny.yaml
FROM python:3.11-slim
WORKDIR /opt/grar
COPY . .
RUN pip install --no-cache-dir -c constraints.txt -e .
ENTRYPOINT ["grar"]
