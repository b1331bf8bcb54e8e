# A STAND-IN for python:3.11.16-slim-bookworm, for make compose-test where no registry
# answers: Debian bookworm's own Python 3.11 (python3, python3-venv, python-is-python3).
# Never used where the real image can be pulled (build.sh pulls first).
FROM broker-stand-in/python-rootfs:bookworm
ARG IMAGE
LABEL org.broker.stand-in="${IMAGE} from Debian bookworm packages" \
      org.opencontainers.image.vendor="broker compose-test stand-in, not the upstream image" \
      org.opencontainers.image.description="Local stand-in for ${IMAGE}: Debian bookworm python3"
ENV LANG=C.UTF-8
CMD ["python3"]
