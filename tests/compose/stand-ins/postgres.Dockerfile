# A STAND-IN for postgres:15.19-bookworm, for make compose-test where no registry answers:
# Debian bookworm's postgresql-15, with an entrypoint that honours what compose.yaml uses
# (POSTGRES_USER, POSTGRES_DB, POSTGRES_PASSWORD, the data volume). Never used where the
# real image can be pulled (build.sh pulls first).
FROM broker-stand-in/postgres-rootfs:bookworm
ARG IMAGE
LABEL org.broker.stand-in="${IMAGE} from Debian bookworm packages" \
      org.opencontainers.image.vendor="broker compose-test stand-in, not the upstream image" \
      org.opencontainers.image.description="Local stand-in for ${IMAGE}: Debian bookworm postgresql-15"
ENV PATH=/usr/lib/postgresql/15/bin:$PATH PGDATA=/var/lib/postgresql/data LANG=C.UTF-8
COPY postgres-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
VOLUME /var/lib/postgresql/data
EXPOSE 5432
# As the real image: SIGINT is PostgreSQL's fast shutdown (SIGTERM waits for clients).
STOPSIGNAL SIGINT
ENTRYPOINT ["docker-entrypoint.sh"]
CMD ["postgres"]
