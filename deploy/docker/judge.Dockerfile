# The judge server for remote backends (an OpenAI-compatible endpoint such as
# vLLM serving Gemma-3-12B): no jax, no model weights in the image.
#   docker build -f deploy/docker/judge.Dockerfile -t grar-judge .
#   docker run -p 50051:50051 -v $PWD/judge.yaml:/etc/grar/judge.yaml grar-judge
FROM python:3.11-slim
WORKDIR /opt/grar
COPY deploy/docker/judge-requirements.txt constraints.txt ./
RUN pip install --no-cache-dir -c constraints.txt -r judge-requirements.txt
COPY pyproject.toml README.md ./
COPY protos protos
COPY grar_config grar_config
COPY judge_server judge_server
# The package's own dependencies include jax for the trainer; the judge
# image takes only what the remote backends import.
RUN pip install --no-cache-dir --no-deps .
RUN useradd --system grar
USER grar
EXPOSE 50051
ENTRYPOINT ["python", "-m", "judge_server", "--config", "/etc/grar/judge.yaml"]
